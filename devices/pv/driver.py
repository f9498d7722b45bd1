"""SunSpec Modbus TCP driver for a PV inverter without storage: ``sunspec+tcp://host[:port]/unit[?revert_s=N]``.

The Fronius driver (:class:`devices.fronius.driver.SunSpecDriver`) without its storage requirement: it needs models
1, 101/102/103 and 160, reads 122 when the device has it (``pv_curtail_w`` from ``WAval``) and writes the
grid-support setpoints to 123, 126 and 132 the same way.
"""

from __future__ import annotations

from devices.base import Measurement
from devices.fronius.driver import SunSpecDriver
from devices.pv.model import MEASUREMENTS


class PvSunSpecDriver(SunSpecDriver):
    requires_storage = False

    async def _read_once(self) -> Measurement:
        m = await super()._read_once()
        return Measurement(m.t_s, {k: m.values[k] for k in MEASUREMENTS if k in m.values})
