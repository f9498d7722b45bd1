"""A virtual Fronius hybrid behind SunSpec Modbus TCP (:mod:`devices.fronius.modbus_server`), scheme ``sunspec+tcp``.

The register image is rebuilt from the model after every step (:meth:`sync`) and after every accepted write.
Writes go to model 124's writable points (StorCtl_Mod, MinRsvPct, OutWRte, InWRte, InOutWRte_RvrtTms, ChaGriSet)
and to the grid-support points of 123, 126 and 132 (``sunspec_map.CONTROLS_WRITABLE`` ...): a write touching any
other register is answered ILLEGAL DATA ADDRESS (0x02) by the datastore, a value the device does not accept
ILLEGAL DATA VALUE (0x03); in both cases nothing changes. Unit ids other
than the configured one get GATEWAY TARGET DEVICE FAILED TO RESPOND (0x0B), function codes other than 0x03, 0x06
and 0x10 ILLEGAL FUNCTION (0x01).

Fault injection for tests and bench drills: :meth:`set_silent` (connections stay open, no replies) and
:meth:`corrupt_next_reply` (the next reply carries a wrong byte count or function code).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import ClassVar
from ssl import SSLContext

from pydantic import BaseModel

from devices.family import DeviceContext, Family, ModelBank
from devices.fronius.model import FroniusBank, FroniusConfig
from devices.fronius.modbus_server import ILLEGAL_DATA_ADDRESS, ILLEGAL_DATA_VALUE, ModbusError, ModbusTcpRegisterServer
from devices.fronius.sunspec_map import BASE_ADDRESS, FroniusRegisterMap, apply_controls
from devices.virtual import VirtualDevice

log = logging.getLogger(__name__)


def corrupt_frame(frame: bytes) -> bytes:
    """A reply whose framing is intact but whose content is wrong: the byte count of a read reply, else the
    function code, no longer matches."""
    data = bytearray(frame)
    if len(data) >= 9 and data[7] in (3, 4):
        data[8] ^= 0x02
    elif len(data) >= 8:
        data[7] ^= 0x40
    return bytes(data)

#: certificate roles that may write over Modbus/TCP Security (control components and the co-simulation)
WRITE_ROLES = frozenset({"controller", "cosim"})


class FroniusSunSpecDevice(VirtualDevice):
    config_type: ClassVar[type[BaseModel]] = FroniusConfig  # PvSunSpecDevice serves a PvConfig
    scheme = "sunspec+tcp"
    serves_tls = True  # Modbus/TCP Security

    def __init__(self, family: Family, config: BaseModel, *, device_id: str = "device",
                 max_connections: int = 16, idle_timeout_s: float | None = 300.0,
                 context: DeviceContext | None = None) -> None:
        super().__init__(family, config, device_id=device_id, context=context)
        assert isinstance(config, FroniusConfig) and isinstance(self.bank, FroniusBank)  # checked by VirtualDevice
        self.cfg: FroniusConfig = config
        self.fbank: FroniusBank = self.bank
        self.map = FroniusRegisterMap(config, device_id)
        self.image: list[int] = self.map.registers(self.fbank.state(0))
        self.server = ModbusTcpRegisterServer(self, config.unit_id, max_connections=max_connections,
                                              idle_timeout_s=idle_timeout_s, corrupt=corrupt_frame,
                                              write_roles=WRITE_ROLES)

    # -- VirtualDevice -----------------------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0, *, ssl: SSLContext | None = None) -> str:
        """Serve SunSpec on host:port; with ``ssl`` (devices.tls.server_context) as Modbus/TCP Security."""
        await self.server.tcp.start(host, port, ssl=ssl)
        return self.address

    async def start_secure(self, ssl: SSLContext, host: str = "127.0.0.1", port: int = 0) -> str:
        return await self.start(host, port, ssl=ssl)

    async def stop(self) -> None:
        await self.server.tcp.stop()

    def sync(self) -> None:
        self.image = self.map.registers(self.fbank.state(0))

    # -- introspection and fault injection -------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"sunspec+tcp://{self.server.tcp.host}:{self.server.tcp.port}/{self.cfg.unit_id}"

    @property
    def port(self) -> int:
        return self.server.tcp.port

    @property
    def silent(self) -> bool:
        return self.server.silent

    def set_silent(self, silent: bool) -> None:
        self.server.silent = silent

    def corrupt_next_reply(self) -> None:
        self.server.corrupt_next = True

    def open_connections(self) -> int:
        return self.server.tcp.open_connections()

    # -- the register store (modbus_server.RegisterStore) ------------------------------------------------
    def read(self, address: int, count: int) -> list[int]:
        offset = address - BASE_ADDRESS
        if offset < 0 or offset + count > len(self.image):
            raise ModbusError(ILLEGAL_DATA_ADDRESS)
        return self.image[offset:offset + count]

    def write(self, address: int, values: Sequence[int]) -> None:
        write_controls(self, self.fbank, address, values)
        self.sync()


def write_controls(dev: VirtualDevice, bank: ModelBank, address: int, values: Sequence[int]) -> None:
    """A Modbus write into the served map -> the model: storage (124) or grid-support functions (123/126/132).

    A register that is not writable anywhere in the write: 0x02 ILLEGAL DATA ADDRESS; a value the device does not
    accept: 0x03 ILLEGAL DATA VALUE; in both cases nothing changes. One write lands in one model (the writable
    points of two models are never adjacent)."""
    rmap: FroniusRegisterMap = dev.map  # type: ignore[attr-defined]
    if any(address + k not in rmap.writable for k in range(len(values))):
        raise ModbusError(ILLEGAL_DATA_ADDRESS)  # read-only, not implemented, or outside the map
    try:
        written = rmap.written(address, [int(v) for v in values])
        if len(written) != 1:
            raise ValueError("a write spans two models")
        (mid, points), = written.items()
        if mid == 124:
            bank.set_storage_control(0, dev.t_s, **rmap.storage_fields(address, [int(v) for v in values]))  # type: ignore[attr-defined]
        else:
            apply_controls(bank.functions, 0, dev.t_s, mid, points)  # type: ignore[attr-defined]
    except (KeyError, ValueError) as exc:
        log.info("%s: write %s at %d refused: %s", dev.device_id, list(values), address, exc)
        raise ModbusError(ILLEGAL_DATA_VALUE) from None
