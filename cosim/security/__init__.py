"""Security of the framework's own links and pages: the ``s4g pki`` commands (:mod:`.cli`; the certificate authority
itself is :mod:`devices.pki`), broker policies (:mod:`.broker_policy`), web authentication (:mod:`.webauth`). TLS
contexts are in :mod:`devices.tls` (every layer uses them). See docs/security.md."""
