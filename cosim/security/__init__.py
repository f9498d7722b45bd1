"""Security of the framework's own links and pages: the PKI (:mod:`.pki`, ``s4g pki``), broker policies
(:mod:`.broker_policy`), web authentication (:mod:`.webauth`). TLS contexts are in :mod:`devices.tls` (every
layer uses them). See docs/security.md."""
