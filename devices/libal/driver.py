"""The ``libal`` driver: the LiBal rig's BMS on CAN and its PCS on Modbus RTU behind the one driver interface.

Addresses (see docs/devices/libal.md)::

    libal://HOST:RTU_PORT/UNIT?can=HOST:CAN_PORT&channel=can0        RTU framing over TCP + socketcand
    libal://serial/UNIT?port=/dev/ttyUSB0&baud=19200&can=HOST:PORT   RTU on a serial line + socketcand
    libal://serial/1?port=/dev/ttyUSB0&can_interface=socketcan&channel=can0   local SocketCAN adapter
    libal://                                                          start the virtual rig (DeviceSim)

Optional query keys: ``parity`` (N/E/O), ``stopbits``, ``can_bitrate``, ``bms_echo`` (1: wait for the BMS's
echo of each request, the LiBal extension; 0: a BMS that only broadcasts), ``bms_stale_s`` (default 3).

read: the PCS block (one RTU read of 40 registers) and the BMS state from the latest CAN frames; the driver
first sends an EMS request frame (0x3C8, keep-alive + poll) and waits for the status frame echoing its counter,
so the state is the one the BMS had after the request. BMS frames older than ``bms_stale_s`` give
DeviceUnavailable, a malformed frame of a needed identifier gives ProtocolError.

write: ``p_w`` must fit the PCS rating (capabilities) and the BMS's current limits now, with ``p = V * I``
converted at the PCS efficiency (``I = p * eta_charge / V`` charging, ``|p| / (eta_discharge * V)`` discharging;
a tolerance of 0.1 % + 0.05 A absorbs the wire quantisation); otherwise SetpointRejected. Then the mode switch
goes to the BMS over CAN (charge enable for p > 0, discharge enable for p < 0, neither for 0) and must be granted
in the BMS's 0x35C, and finally the setpoints go to the PCS over RTU (MODE=1, ENABLE=1, P, Q in one write,
sign converted to the PCS's + = discharge). A Modbus ILLEGAL DATA VALUE from the PCS is a SetpointRejected too.
``p_w = 0`` (the safe setpoint) is written to the PCS first, so the power stops even with the BMS link down.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable
from urllib.parse import parse_qs

from devices.backoff import Backoff
from devices.base import (Address, Capabilities, DeviceError, DeviceUnavailable, Measurement, ProtocolError, Setpoint,
                          SetpointRejected)
from devices.connection import ReconnectingDriver
from devices.libal import can_codec, rtu
from devices.libal.can_link import CanLink, CanTarget
from devices.libal.rtu_io import RtuClient, SerialRtuTransport, TcpRtuTransport
from devices.serial_line import SerialLine

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0
CURRENT_TOLERANCE_REL = 1e-3
CURRENT_TOLERANCE_A = 0.05


@dataclass(frozen=True)
class LibalAddress:
    """The parts of a ``libal://`` address."""

    rtu_host: str | None
    rtu_port: int
    serial_port: str | None
    baud: int
    parity: str
    stopbits: int
    unit: int
    can: CanTarget
    bms_echo: bool
    bms_stale_s: float

    @classmethod
    def parse(cls, address: Address) -> LibalAddress:
        if address.scheme != "libal":
            raise ValueError(f"{address.raw!r}: not a libal:// address")
        q = {k: v[-1] for k, v in parse_qs(address.query, keep_blank_values=True).items()}
        try:
            unit = int(address.path or 1)
            if not 1 <= unit <= 247:
                raise ValueError
        except ValueError:
            raise ValueError(f"{address.raw!r}: unit id {address.path!r} must be an integer 1..247") from None
        serial_port = None
        if address.host == "serial":
            serial_port = q.get("port")
            if not serial_port:
                raise ValueError(f"{address.raw!r}: a serial address needs ?port=/dev/ttyUSB0")
        elif not address.host:
            raise ValueError(f"{address.raw!r}: no host (libal:// without a host starts a virtual device in a "
                             "co-simulation; a driver needs HOST:PORT or serial)")
        interface = q.get("can_interface", "socketcand")
        can_host, can_port = None, None
        if interface == "socketcand":
            host, sep, port = q.get("can", "").rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"{address.raw!r}: needs can=HOST:PORT of the socketcand server "
                                 "(or can_interface=socketcan&channel=can0 for a local adapter)")
            can_host, can_port = host, int(port)
        bitrate = q.get("can_bitrate")
        return cls(
            rtu_host=None if serial_port else address.host,
            rtu_port=address.port or 502,
            serial_port=serial_port,
            baud=int(q.get("baud", 19200)),
            parity=q.get("parity", "N").upper(),
            stopbits=int(q.get("stopbits", 1)),
            unit=unit,
            can=CanTarget(interface, q.get("channel", "can0"), can_host, can_port, int(bitrate) if bitrate else None),
            bms_echo=q.get("bms_echo", "1") not in ("0", "false", "no"),
            bms_stale_s=float(q.get("bms_stale_s", 3.0)),
        )

    def transport(self) -> SerialLine:
        if self.serial_port:
            return SerialRtuTransport(self.serial_port, self.baud, self.parity, self.stopbits)
        assert self.rtu_host is not None
        return TcpRtuTransport(self.rtu_host, self.rtu_port)


def _from_pcs(value: float) -> float:
    """PCS register (+ = delivered to the grid) -> load arrow (+ = drawn: charging); 0 stays +0.0."""
    return 0.0 - value


def _to_pcs(value: float) -> int:
    """Load arrow -> PCS register, rounded to the register's 1 W / 1 var."""
    return 0 - round(value)


def current_needed_a(p_w: float, v_v: float, eta_charge: float, eta_discharge: float) -> float:
    """DC current (A, >= 0) the battery carries for an AC power ``p_w`` (+ = charging) at pack voltage ``v_v``."""
    if p_w >= 0:
        return p_w * eta_charge / v_v
    return -p_w / (eta_discharge * v_v)


class LibalDriver(ReconnectingDriver):
    schemes = ("libal",)
    query_keys = ("port", "baud", "parity", "stopbits", "can", "can_interface", "channel", "can_bitrate", "bms_echo",
                  "bms_stale_s")

    def __init__(self, address: Address, capabilities: Capabilities, *, timeout_s: float = 2.0) -> None:
        super().__init__(address, capabilities, timeout_s=timeout_s, backoff=Backoff(BACKOFF_FIRST_S, BACKOFF_MAX_S))
        self.options = LibalAddress.parse(address)
        self._rtu: RtuClient | None = None
        self._can: CanLink | None = None
        self._need_can = True  # False while the safe setpoint goes to the PCS alone
        self._view = can_codec.BmsView()
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[Any]]] = []
        self._counter = 0
        self._mode: tuple[bool, bool] | None = None  # last (charge, discharge) enable request sent
        self._setpoint = {"p_w": 0.0, "q_var": 0.0}
        self._pcs: dict[str, float] = {}

    # -- the links (ReconnectingDriver): PCS over RTU and BMS over CAN, each re-opened when it is down ----------
    def _rtu_up(self) -> bool:
        return self._rtu is not None and self._rtu.transport.is_open

    def _can_up(self) -> bool:
        return self._can is not None and self._can.alive

    def _link_up(self) -> bool:
        return self._rtu_up() and (self._can_up() or not self._need_can)

    async def _open_link(self) -> None:
        if not self._rtu_up():
            await self._open_rtu()
        if self._need_can and not self._can_up():
            await self._open_can()

    async def _close_link(self) -> None:
        await self._close_rtu()
        await self._close_can()

    async def _drop_broken(self, error: DeviceError) -> None:
        """After an error drop only the links that are down; an RTU client that timed out resyncs by itself."""
        self._up = False
        if not self._rtu_up():
            await self._close_rtu()
        if not self._can_up():
            await self._close_can()

    def _needs_link(self, setpoint: Setpoint) -> bool:
        return setpoint.values.get("p_w", None) != 0  # the safe setpoint goes out on whatever link is up

    async def _open_rtu(self) -> None:
        await self._close_rtu()
        opt = self.options
        transport = opt.transport()
        await transport.open(self.timeout_s)
        self._rtu = RtuClient(transport, opt.unit, self.timeout_s)
        try:
            pcs = await self._read_pcs()
        except (DeviceUnavailable, ProtocolError):
            await self._close_rtu()
            raise
        if pcs["MODE"] == 1:
            self._setpoint = {"p_w": _from_pcs(pcs["P_SET_W"]), "q_var": _from_pcs(pcs["Q_SET_VAR"])}

    async def _open_can(self) -> None:
        await self._close_can()
        self._view.clear()
        link = CanLink(self.options.can, self._on_message, self._on_lost)
        await link.open(self.timeout_s)
        self._can = link

    async def _close_rtu(self) -> None:
        rtu_client, self._rtu = self._rtu, None
        if rtu_client is not None:
            await rtu_client.transport.close()

    async def _close_can(self) -> None:
        can_link, self._can = self._can, None
        if can_link is not None:
            await can_link.close()
        self._fail_waiters(DeviceUnavailable(f"{self.address.raw}: CAN link closed"))

    # -- CAN reception (runs on the loop, called from the reader thread) ---------------------------------------
    def _on_message(self, msg: Any) -> None:
        if getattr(msg, "is_error_frame", False) or getattr(msg, "is_remote_frame", False):
            return
        try:
            self._view.update(msg.arbitration_id, bytes(msg.data), time.monotonic(), is_extended=msg.is_extended_id)
        except can_codec.CanDecodeError as exc:
            log.warning("%s: %s", self.address.raw, exc)
        for pred, fut in list(self._waiters):
            if not fut.done() and pred():
                fut.set_result(None)

    def _on_lost(self, error: BaseException | None) -> None:
        log.warning("%s: CAN link lost: %s", self.address.raw, error)
        self._fail_waiters(DeviceUnavailable(f"{self.address.raw}: CAN link lost: {error}"))

    def _fail_waiters(self, exc: DeviceUnavailable) -> None:
        for _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(exc)

    async def _wait_for(self, pred: Callable[[], bool], timeout_s: float) -> bool:
        if pred():
            return True
        fut = asyncio.get_running_loop().create_future()
        entry = (pred, fut)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(fut, timeout_s)
            return True
        except TimeoutError:
            return False
        finally:
            self._waiters.remove(entry)

    def _status_after(self, t_sent: float, counter: int) -> Callable[[], bool]:
        def seen() -> bool:
            entry = self._view.frames.get(can_codec.STATUS)
            return entry is not None and entry[0] >= t_sent and int(entry[1]["EmsCounterEcho"]) == counter
        return seen

    async def _request(self, mode: tuple[bool, bool] | None) -> tuple[float, int]:
        """Send one EMS request (mode switch if ``mode`` is given, else keep-alive/poll); return (time, counter)."""
        assert self._can is not None
        self._counter = (self._counter + 1) & 0xFF
        req = can_codec.EmsRequest(self._counter, mode is not None, *(mode or (False, False)))
        t_sent = time.monotonic()
        await self._can.send(can_codec.EMS_REQUEST, can_codec.encode_ems_request(req), self.timeout_s)
        return t_sent, self._counter

    async def _bms(self, *, poll: bool) -> can_codec.BmsState:
        """The BMS state; with ``poll`` first ask the BMS (and wait for its echo when it gives one)."""
        if self._can is None or not self._can.alive:
            raise DeviceUnavailable(f"{self.address.raw}: CAN link down")
        if poll:
            t_sent, counter = await self._request(self._mode)
            if self.options.bms_echo and not await self._wait_for(self._status_after(t_sent, counter),
                                                                   self.timeout_s):
                log.debug("%s: no echo of EMS request %d; using the latest frames", self.address.raw, counter)
        return self._view.snapshot(time.monotonic(), self.options.bms_stale_s)

    # -- PCS ------------------------------------------------------------------------------------------------
    async def _read_pcs(self) -> dict[str, float]:
        assert self._rtu is not None
        words = await self._rtu.read_holding(0, rtu.REGISTER_COUNT)
        self._pcs = rtu.decode_image(words)
        return self._pcs

    # -- the driver interface -------------------------------------------------------------------------------
    async def _read_once(self) -> Measurement:
        pcs = await self._read_pcs()
        bms = await self._bms(poll=True)
        p_w = _from_pcs(pcs["P_MEAS_W"])
        return Measurement(self.clock(), {
            "p_w": p_w,
            "q_var": _from_pcs(pcs["Q_MEAS_VAR"]),
            "batt_p_w": p_w,
            "soc": bms.soc,
            "e_wh": bms.e_wh,
            "p_charge_avail_w": pcs["P_CHARGE_AVAIL_W"],
            "p_discharge_avail_w": pcs["P_DISCHARGE_AVAIL_W"],
            "v_v": bms.v_v,
            "i_a": bms.i_a,
            "t_c": bms.t_c,
            "soh": bms.soh,
            "alarms": float(bms.alarms),
            "i_charge_max_a": bms.i_charge_max_a,
            "i_discharge_max_a": bms.i_discharge_max_a,
        })

    async def _write_once(self, setpoint: Setpoint) -> None:
        if self._needs_link(setpoint):
            await self._write_locked(setpoint)
        else:
            await self._stop_power(setpoint)

    async def _stop_power(self, setpoint: Setpoint) -> None:
        """p_w = 0 (the safe setpoint): the PCS first, so the power stops even when the BMS link is down; then
        the BMS standby request (its failure is still reported)."""
        self._need_can = False
        try:
            await self._ensure_open()
        finally:
            self._need_can = True
        await self._write_pcs(setpoint)
        await self._ensure_open()
        if self._mode != (False, False):
            await self._switch_mode((False, False))

    async def _write_locked(self, setpoint: Setpoint) -> None:
        if "p_w" in setpoint.values:
            p = float(setpoint.values["p_w"])
            try:
                bms = await self._bms(poll=False)
            except DeviceUnavailable:
                bms = await self._bms(poll=True)
            self._check_current(p, bms)
            mode = (p > 0, p < 0)
            if mode != self._mode or (mode[0] and not bms.charge_enable) or (mode[1] and not bms.discharge_enable):
                await self._switch_mode(mode)
        await self._write_pcs(setpoint)

    async def _write_pcs(self, setpoint: Setpoint) -> None:
        """MODE=1, ENABLE=1, P and Q in one RTU write (a value not in ``setpoint`` keeps its last value)."""
        values = {**self._setpoint, **setpoint.values}
        words = [1, 1, *rtu.REGS["P_SET_W"].encode(_to_pcs(values["p_w"])),
                 *rtu.REGS["Q_SET_VAR"].encode(_to_pcs(values["q_var"]))]
        assert self._rtu is not None
        try:
            await self._rtu.write_registers(0, words)
        except rtu.ModbusExceptionReply as exc:
            if exc.code == rtu.ILLEGAL_DATA_VALUE:
                raise SetpointRejected(f"{self.address.raw}: the PCS refused {dict(setpoint.values)}: "
                                       f"{exc.name}") from exc
            raise
        self._setpoint = values

    def _check_current(self, p_w: float, bms: can_codec.BmsState) -> None:
        if p_w == 0:
            return
        if not bms.v_v > 0:
            raise SetpointRejected(f"p_w={p_w:g}: the BMS reports a pack voltage of {bms.v_v:g} V")
        eta_c = self._pcs.get("ETA_CHARGE") or 1.0
        eta_d = self._pcs.get("ETA_DISCHARGE") or 1.0
        need = current_needed_a(p_w, bms.v_v, eta_c, eta_d)
        limit = bms.i_charge_max_a if p_w > 0 else bms.i_discharge_max_a
        if need > limit * (1 + CURRENT_TOLERANCE_REL) + CURRENT_TOLERANCE_A:
            kind = "charge" if p_w > 0 else "discharge"
            raise SetpointRejected(f"p_w={p_w:g} W needs {need:.1f} A at {bms.v_v:.1f} V; the BMS allows "
                                   f"{limit:.1f} A {kind} current now")

    async def _switch_mode(self, mode: tuple[bool, bool]) -> None:
        """Send the charge/discharge enable request and wait until the BMS's 0x35C grants it."""
        t_sent, counter = await self._request(mode)
        self._mode = mode

        def granted() -> bool:
            entry = self._view.frames.get(can_codec.REQUEST_FLAGS)
            if entry is None or entry[0] < t_sent:
                return False
            if self.options.bms_echo and not self._status_after(t_sent, counter)():
                return False
            return ((not mode[0] or bool(entry[1]["ChargeEnable"]))
                    and (not mode[1] or bool(entry[1]["DischargeEnable"])))

        if not await self._wait_for(granted, self.timeout_s):
            bms = self._view.snapshot(time.monotonic(), self.options.bms_stale_s)
            wanted = "charging" if mode[0] else "discharging"
            if self.options.bms_echo and not self._status_after(t_sent, counter)():
                raise DeviceUnavailable(f"{self.address.raw}: the BMS did not answer the mode request within "
                                        f"{self.timeout_s:g} s")
            raise SetpointRejected(f"{self.address.raw}: the BMS did not enable {wanted} (0x35C charge="
                                   f"{bms.charge_enable}, discharge={bms.discharge_enable})")

    async def identity(self) -> dict[str, Any]:
        bms = self._view.frames.get(can_codec.MANUFACTURER)
        name = ""
        if bms is not None:
            name = bytes(int(bms[1].get(f"Name{i}", 32)) for i in range(8)).decode("ascii", "replace").strip()
        opt = self.options
        return {
            "address": self.address.raw,
            "protocol": "libal: PCS on Modbus RTU, BMS on CAN (Pylontech/SMA frames + LiBal extension)",
            "rtu": opt.transport().description, "unit": opt.unit, "can": opt.can.describe(),
            "manufacturer": name or None,
            "p_charge_rated_w": self._pcs.get("P_CHARGE_RATED_W", math.nan),
            "p_discharge_rated_w": self._pcs.get("P_DISCHARGE_RATED_W", math.nan),
        }

