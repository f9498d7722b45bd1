"""The virtual LiBal rig: the model behind a CAN bus (socketcand server + BMS node) and a Modbus RTU PCS.

What a driver sees is what a real rig shows: the BMS broadcasts its frames once per second (wall time) and
after every model step, and answers each EMS request frame (0x3C8) at once with a full batch whose status frame
echoes the request counter; it applies the charge/discharge enable requests (the mode switch) it receives. The
PCS is an RTU slave whose setpoint registers drive the model's PCS and whose measurement registers are refreshed
after every step.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from pydantic import BaseModel

from devices.family import DeviceContext, Family
from devices.libal import can_codec, rtu
from devices.libal.model import ALARM_MASK, LibalBank, LibalConfig
from devices.libal.rtu_io import RtuTcpServer
from devices.libal.socketcand_server import CanFrame, SocketcandServer
from devices.virtual import VirtualDevice

log = logging.getLogger(__name__)

BMS_STANDBY, BMS_READY, BMS_CHARGING, BMS_DISCHARGING, BMS_PROTECTION = range(5)


class LibalVirtualDevice(VirtualDevice):
    config_type = LibalConfig
    scheme = "libal"

    def __init__(self, family: Family, config: BaseModel, *, device_id: str = "device", unit: int = 1,
                 channel: str = "can0", broadcast_period_s: float = 1.0, context: DeviceContext | None = None) -> None:
        super().__init__(family, config, device_id=device_id, context=context)
        assert isinstance(config, LibalConfig) and isinstance(self.bank, LibalBank)
        self.cfg: LibalConfig = config
        self.model: LibalBank = self.bank
        self.unit = unit
        self.channel = channel
        self.broadcast_period_s = broadcast_period_s
        self.silent = False
        self.ems_counter = 0
        self.host = "127.0.0.1"
        self.image = rtu.RegisterImage()
        b = config.battery
        self.image.set("P_CHARGE_RATED_W", round(b.p_charge_max_w))
        self.image.set("P_DISCHARGE_RATED_W", round(b.p_discharge_max_w))
        self.image.set("S_RATED_VA", round(config.s_max_va))
        self.image.set("ETA_CHARGE", b.eta_charge)
        self.image.set("ETA_DISCHARGE", b.eta_discharge)
        self.rtu_server = RtuTcpServer(unit, rtu.PcsSlave(self.image, on_write=self._apply_pcs_registers))
        self.can_server = SocketcandServer(channel)
        self.can_server.add_listener(self._on_can_frame)
        self._apply_pcs_registers(self.image.values())  # a PCS powers up in standby
        self._broadcaster: asyncio.Task[None] | None = None
        self.sync()

    # -- lifecycle ------------------------------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0, *, can_port: int = 0) -> str:
        """Serve RTU on ``port`` and the CAN bus on ``can_port`` (0 = any free port); return the address."""
        self.host = host
        await self.rtu_server.start(host, port)
        try:
            can_port = await self.can_server.start(host, can_port)
        except OSError:
            await self.rtu_server.stop()
            raise
        self._broadcaster = asyncio.create_task(self._broadcast_forever(), name=f"{self.device_id}-bms")
        return self.address

    @property
    def address(self) -> str:
        return (f"libal://{self.host}:{self.rtu_server.port}/{self.unit}"
                f"?can={self.host}:{self.can_server.port}&channel={self.channel}")

    async def stop(self) -> None:
        task, self._broadcaster = self._broadcaster, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self.rtu_server.stop()
        await self.can_server.stop()

    def open_connections(self) -> int:
        return self.rtu_server.open_connections() + self.can_server.open_connections()

    # -- fault injection (conformance tests, bench drills) -----------------------------------------------------
    def set_silent(self, silent: bool) -> None:
        """A hung rig: the PCS stops answering and the BMS stops broadcasting; connections stay open."""
        self.silent = silent
        self.rtu_server.silent = silent

    def corrupt_next_rtu_reply(self) -> None:
        self.rtu_server.corrupt_next = True

    # -- model <-> protocols ----------------------------------------------------------------------------------
    def _apply_pcs_registers(self, values: Mapping[str, float]) -> None:
        active = values["MODE"] == 1
        self.model.setpoints["p_w"][0] = -values["P_SET_W"] if active else 0.0  # PCS: + = discharge
        self.model.setpoints["q_var"][0] = -values["Q_SET_VAR"] if active else 0.0
        self.model.pcs_enabled[0] = values["ENABLE"] == 1

    def _on_can_frame(self, frame: CanFrame) -> None:
        if frame.is_extended or frame.arbitration_id != can_codec.EMS_REQUEST:
            return
        try:
            req = can_codec.decode_ems_request(frame.data)
        except can_codec.CanDecodeError as exc:
            log.warning("%s: BMS ignores a malformed EMS request: %s", self.device_id, exc)
            return
        if req.mode_valid:
            self.model.charge_request[0] = req.charge
            self.model.discharge_request[0] = req.discharge
        self.ems_counter = req.counter
        self.broadcast()

    def bms_state(self) -> can_codec.BmsState:
        m = self.model
        alarms = int(m.alarms[0])
        charge, discharge = bool(m.charge_enable[0]), bool(m.discharge_enable[0])
        i = float(m.i_a[0])
        if alarms & ALARM_MASK:
            state = BMS_PROTECTION
        elif i > 0.05:
            state = BMS_CHARGING
        elif i < -0.05:
            state = BMS_DISCHARGING
        else:
            state = BMS_READY if (charge or discharge) else BMS_STANDBY
        return can_codec.BmsState(
            charge_voltage_limit_v=float(m.charge_voltage_limit_v[0]),
            i_charge_max_a=float(m.i_charge_max_a[0]),
            i_discharge_max_a=float(m.i_discharge_max_a[0]),
            discharge_voltage_limit_v=float(m.discharge_voltage_limit_v[0]),
            soc=float(m.battery.soc[0]), soh=float(m.soh[0]),
            v_v=float(m.v_v[0]), i_a=i, t_c=float(m.t_c[0]), alarms=alarms,
            charge_enable=charge, discharge_enable=discharge,
            e_wh=float(m.battery.e_wh[0]), ems_counter_echo=self.ems_counter, bms_state=state,
            module_count=self.cfg.module_count, manufacturer="LIBAL",
        )

    def broadcast(self) -> None:
        """Put one batch of BMS frames on the bus (nothing while silent or not serving)."""
        if self.silent or self.can_server.port is None or self._broadcaster is None:
            return
        for frame_id, data in can_codec.encode_bms_state(self.bms_state()):
            self.can_server.publish(CanFrame(frame_id, data))

    async def _broadcast_forever(self) -> None:
        while True:
            await asyncio.sleep(self.broadcast_period_s)
            try:
                self.broadcast()
            except Exception:  # keep the BMS alive; the error is a bug worth a log line, not a dead bus
                log.exception("%s: BMS broadcast failed", self.device_id)

    def sync(self) -> None:
        m = {k: float(v[0]) for k, v in self.model.measure().items()}
        img = self.image
        img.set("P_MEAS_W", -m["p_w"])
        img.set("Q_MEAS_VAR", -m["q_var"])
        img.set("V_DC_V", m["v_v"])
        img.set("P_CHARGE_AVAIL_W", max(m["p_charge_avail_w"], 0.0))
        img.set("P_DISCHARGE_AVAIL_W", max(m["p_discharge_avail_w"], 0.0))
        setpoint = -img.get("P_SET_W") if img.get("MODE") == 1 else 0.0
        limited = abs(m["p_w"] - setpoint) > 1.0 if img.get("ENABLE") == 1 else False
        alarm = int(m["alarms"]) & ALARM_MASK
        if alarm:
            status = rtu.STATUS_FAULT
        elif img.get("MODE") != 1 or img.get("ENABLE") != 1:
            status = rtu.STATUS_STANDBY
        else:
            status = rtu.STATUS_LIMITED if limited else rtu.STATUS_RUNNING
        img.set("STATUS", status)
        img.set("FAULT_CODE", (rtu.FAULT_BMS_PROTECTION if alarm else 0) | (rtu.FAULT_BMS_LIMITED if limited else 0))
        self.broadcast()
