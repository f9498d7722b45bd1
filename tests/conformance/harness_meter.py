"""The meter in the conformance suite: DLMS/COSEM over the TCP wrapper and over HDLC (on a TCP socket).

A meter is read-only: the suite checks that every write is refused by the driver (SetpointRejected) and, on
the wire, that a SET.request is answered with the data-access-result read-write-denied.
"""

from __future__ import annotations


from devices import registry
from devices.base import Address, Driver, Setpoint
from devices.meter import apdu as A
from devices.meter import axdr, hdlc
from devices.meter.client import PROPOSED, DlmsClient, HdlcTransport, TcpByteLink, WrapperTransport
from devices.meter.driver import DlmsHdlcDriver, DlmsTcpDriver
from devices.meter.virtual import VirtualMeter, VirtualMeterHdlc
from tests.conformance.harness import DeviceHarness

POINT = {"point_p_w": 2300.0, "point_q_var": 400.0, "point_v_pu": 1.01}


class _MeterHarness(DeviceHarness):
    valid_setpoint = Setpoint({})  # the driver itself refuses it: a meter takes nothing
    invalid_setpoint = Setpoint({"p_w": 1000.0})
    required_measurements = registry.family("meter").measurements
    expected_wire_error = "read-write-denied"
    read_only = True
    virtual_cls: type[VirtualMeter] = VirtualMeter
    driver_cls: type[Driver] = DlmsTcpDriver

    def __init__(self) -> None:
        self.family = registry.family("meter")
        self.config = self.family.parse_config({})
        self.device = self.virtual_cls(self.family, self.config, device_id=f"conformance-{self.name}")
        self.address = ""
        self.port = 0
        self.t_s = 0

    async def start_device(self) -> None:
        self.address = await self.device.start("127.0.0.1", self.port)
        self.port = self.device.port

    async def stop_device(self) -> None:
        await self.device.stop()

    def make_driver(self, timeout_s: float = 1.0) -> Driver:
        return self.driver_cls(Address.parse(self.address), self.family.capabilities(self.config),
                               timeout_s=timeout_s)

    async def advance(self, dt_s: int = 1) -> None:
        await self.device.advance(self.t_s, dt_s, POINT)
        self.t_s += dt_s

    async def set_silent(self, silent: bool) -> None:
        self.device.set_silent(silent)

    async def corrupt_next_reply(self) -> None:
        self.device.corrupt_next_reply()

    def _transport(self):
        raise NotImplementedError

    async def raw_invalid_write(self) -> str:
        """SET the import energy register to 1000 Wh with a plain association (not through the driver)."""
        client = DlmsClient(self._transport(), 2.0, proposed=PROPOSED | A.Conformance.SET)
        await client.associate()
        try:
            ref = A.AttributeRef(3, axdr.obis_bytes("1.0.1.8.0.255"), 2)
            reply = await client.transport.request(A.encode_set_normal(0xC1, ref, axdr.u32(1000)), 2.0)
        finally:
            await client.release()
        if reply[:2] != bytes([A.SET_RESPONSE, 1]) or len(reply) != 4:
            return f"unexpected reply {reply.hex()}"
        return A.dar_name(reply[3])

    def open_connections(self) -> int:
        return self.device.open_connections()


class MeterTcpHarness(_MeterHarness):
    name = "meter-dlms-tcp"

    def _transport(self):
        return WrapperTransport("127.0.0.1", self.port, 16, 1)


class MeterHdlcHarness(_MeterHarness):
    name = "meter-dlms-hdlc"
    virtual_cls = VirtualMeterHdlc
    driver_cls = DlmsHdlcDriver

    def _transport(self):
        return HdlcTransport(TcpByteLink("127.0.0.1", self.port), 16,
                             hdlc.server_address(1, self.config.hdlc_physical_address))


