"""S4G Energy Router (Bucharest pilot): AC grid port, 400 V DC bus, PV, battery, DC loads, DC link.

Reached over IEC 61850 MMS (``iec61850://host:102/ERLD0``); the data model is ``energy_router.icd``.
"""

from devices.energy_router.model import FAMILY

__all__ = ["FAMILY"]
