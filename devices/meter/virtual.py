"""A virtual meter: the meter model behind a DLMS/COSEM server, scheme ``dlms+tcp`` (wrapper, port 4059 by
default) or ``dlms+hdlc+tcp`` (HDLC framing on a TCP socket).

Both serve the same objects (:mod:`devices.meter.objects`); :meth:`VirtualMeter.start_hdlc` adds the HDLC
listener to a wrapper meter (``s4g device serve meter`` runs both on one model). Fault injection for tests
and bench drills: :meth:`set_silent` (connections stay open, nothing is answered) and
:meth:`corrupt_next_reply` (the next response's APDU tag is garbage).
"""

from __future__ import annotations

from pydantic import BaseModel

from devices.family import DeviceContext, Family
from devices.meter.model import MeterBank, MeterConfig
from devices.meter.objects import MeterObjects
from devices.meter.server import CosemServer, hdlc_handler, wrapper_handler
from devices.virtual import VirtualDevice
from devices.tcp_server import TcpServer


class VirtualMeter(VirtualDevice):
    config_type = MeterConfig
    scheme = "dlms+tcp"

    def __init__(self, family: Family, config: BaseModel, *, device_id: str = "device",
                 context: DeviceContext | None = None) -> None:
        super().__init__(family, config, device_id=device_id, context=context)
        assert isinstance(config, MeterConfig) and isinstance(self.bank, MeterBank)  # checked by VirtualDevice
        self.cfg: MeterConfig = config
        self.mbank: MeterBank = self.bank
        self.serial = config.serial_for(self.device_id)
        self.objects = MeterObjects(self.mbank, 0, config, self.serial)
        self.server = CosemServer(self.objects, config)
        self.wrapper = TcpServer(wrapper_handler(self.server), name="dlms-wrapper")
        self.hdlc = TcpServer(hdlc_handler(self.server), name="dlms-hdlc")
        self._host = "127.0.0.1"

    # -- VirtualDevice -----------------------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if not self.wrapper.serving:
            self._host = host
            await self.wrapper.start(host, port or self.wrapper.port)
        return self.address

    async def start_hdlc(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if not self.hdlc.serving:
            self._host = host
            await self.hdlc.start(host, port or self.hdlc.port)
        return self.hdlc_address

    async def stop(self) -> None:
        await self.wrapper.stop()
        await self.hdlc.stop()

    # -- introspection and fault injection -------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"dlms+tcp://{self._host}:{self.wrapper.port}/?client={self.cfg.public_client}" \
               f"&server={self.cfg.logical_device}"

    @property
    def hdlc_address(self) -> str:
        return f"dlms+hdlc+tcp://{self._host}:{self.hdlc.port}/?client={self.cfg.public_client}" \
               f"&server={self.cfg.logical_device}&physical={self.cfg.hdlc_physical_address}"

    @property
    def port(self) -> int:
        return self.wrapper.port

    def set_silent(self, silent: bool) -> None:
        self.server.silent = silent

    def corrupt_next_reply(self) -> None:
        self.server.corrupt_next = True

    def open_connections(self) -> int:
        return self.wrapper.open_connections() + self.hdlc.open_connections()


class VirtualMeterHdlc(VirtualMeter):
    """The same meter, started with HDLC on a TCP socket as its (only) protocol."""

    scheme = "dlms+hdlc+tcp"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        return await self.start_hdlc(host, port)

    @property
    def port(self) -> int:
        return self.hdlc.port
