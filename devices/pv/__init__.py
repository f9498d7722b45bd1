"""PV inverter without storage (``pv``): PV behind an MPPT limit, the grid-support functions of SunSpec models
123 (limit, connect, power factor), 126 (volt-var) and 132 (volt-watt), reached over SunSpec Modbus TCP like the
Fronius hybrid (``sunspec+tcp://host:port/unit``)."""

from devices.pv.model import FAMILY

__all__ = ["FAMILY"]
