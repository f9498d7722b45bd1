"""Smart Metrology Meter (SMM) at a connection point, read over DLMS/COSEM (IEC 62056).

Reached over the TCP wrapper (``dlms+tcp://host:4059/?client=16&server=1``), over HDLC on a serial line
(``dlms+hdlc:///dev/ttyUSB0``) or HDLC carried on a TCP socket (``dlms+hdlc+tcp://host:port``, for tests and
serial-to-Ethernet converters). Read-only: a meter accepts no setpoint.
"""

from devices.meter.family import FAMILY

__all__ = ["FAMILY"]
