"""A virtual Fronius hybrid behind SunSpec Modbus TCP (pymodbus server), scheme ``sunspec+tcp``.

The register image is rebuilt from the model after every step (:meth:`sync`) and after every accepted write.
Writes go to model 124's writable points only (StorCtl_Mod, MinRsvPct, OutWRte, InWRte, InOutWRte_RvrtTms,
ChaGriSet): a write touching any other register is answered ILLEGAL DATA ADDRESS (0x02) by the datastore, a
value the device does not accept ILLEGAL DATA VALUE (0x03); in both cases nothing changes. Unit ids other
than the configured one get GATEWAY TARGET DEVICE FAILED TO RESPOND (0x0B) inside the SunSpec range.

Fault injection for tests and bench drills: :meth:`set_silent` (connections stay open, no replies) and
:meth:`corrupt_next_reply` (the next reply carries a wrong byte count or function code).
"""

from __future__ import annotations

import logging

from pydantic import BaseModel
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import SimData, SimDevice
from pymodbus.simulator.simutils import DataType

from devices.family import DeviceContext, Family
from devices.fronius.model import FroniusBank, FroniusConfig
from devices.fronius.sunspec_map import BASE_ADDRESS, FroniusRegisterMap
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


class FroniusSunSpecDevice(VirtualDevice):
    scheme = "sunspec+tcp"

    def __init__(self, family: Family, config: BaseModel, *, device_id: str = "device",
                 context: DeviceContext | None = None) -> None:
        if not isinstance(config, FroniusConfig):
            raise TypeError(f"a virtual Fronius needs a FroniusConfig, got {type(config).__name__}")
        super().__init__(family, config, device_id=device_id, context=context)
        assert isinstance(self.bank, FroniusBank)
        self.cfg: FroniusConfig = config
        self.fbank: FroniusBank = self.bank
        self.map = FroniusRegisterMap(config, device_id)
        self.image: list[int] = self.map.registers(self.fbank.state(0))
        self._server: ModbusTcpServer | None = None
        self._host = "127.0.0.1"
        self._port = 0
        self.silent = False
        self._corrupt = False

    # -- VirtualDevice -----------------------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if self._server is None:
            server = ModbusTcpServer(self._devices(), address=(host, port), trace_packet=self._trace)
            try:
                await server.serve_forever(background=True)
            except RuntimeError as exc:  # pymodbus reports a failed listen (port taken, bad host) this way
                raise OSError(f"cannot serve SunSpec on {host}:{port}: {exc}") from exc
            self._server = server
            self._host, self._port = host, server.transport.sockets[0].getsockname()[1]
        return self.address

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()

    def sync(self) -> None:
        self.image = self.map.registers(self.fbank.state(0))

    # -- introspection and fault injection -------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"sunspec+tcp://{self._host}:{self._port}/{self.cfg.unit_id}"

    @property
    def port(self) -> int:
        return self._port

    def set_silent(self, silent: bool) -> None:
        self.silent = silent

    def corrupt_next_reply(self) -> None:
        self._corrupt = True

    def open_connections(self) -> int:
        return len(self._server.active_connections) if self._server is not None else 0

    # -- datastore ---------------------------------------------------------------------------------------
    def _devices(self) -> list[SimDevice]:
        blocks: list[SimData] = []
        start = 0
        flags = [BASE_ADDRESS + k not in self.map.writable for k in range(len(self.image))]
        for k in range(1, len(self.image) + 1):  # runs of registers sharing one access flag
            if k == len(self.image) or flags[k] != flags[start]:
                blocks.append(SimData(BASE_ADDRESS + start, values=[0] * (k - start), datatype=DataType.REGISTERS,
                                      readonly=flags[start]))
                start = k
        others = SimData(BASE_ADDRESS, values=[0] * len(self.image), datatype=DataType.REGISTERS)
        return [SimDevice(self.cfg.unit_id, simdata=blocks, action=self._action),
                SimDevice(0, simdata=[others], action=self._no_such_unit)]

    async def _action(self, function_code: int, start_address: int, address: int, count: int,
                      registers: list[int], values: list[int] | list[bool] | None) -> ExcCodes | None:
        offset = BASE_ADDRESS - start_address
        if values is not None:
            try:
                fields = self.map.storage_fields(address, [int(v) for v in values])
                self.fbank.set_storage_control(0, self.t_s, **fields)
            except (KeyError, ValueError) as exc:
                log.info("%s: write %s at %d refused: %s", self.device_id, list(values), address, exc)
                return ExcCodes.ILLEGAL_VALUE
            self.sync()
        registers[offset:offset + len(self.image)] = self.image
        return None

    async def _no_such_unit(self, *_: object) -> ExcCodes:
        return ExcCodes.GATEWAY_NO_RESPONSE

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if not sending:
            return data
        if self.silent:
            return b""
        if self._corrupt:
            self._corrupt = False
            return corrupt_frame(data)
        return data
