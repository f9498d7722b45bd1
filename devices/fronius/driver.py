"""SunSpec Modbus TCP driver for a Fronius hybrid: ``sunspec+tcp://host[:port]/unit[?revert_s=N]``.

Port defaults to 502 and unit to 1 (a Fronius inverter; its smart meter is unit 200). On connect the driver
finds the SunSpec map itself: 'SunS' at 40000 (then 0, 50000), then it walks the model headers (ID, L) to the
end marker, so it works with any model order and with models it does not use in between. Each read fetches the
inverter model (101/102/103), the MPPT model 160 and the storage model 124 in as few requests as the
125-register limit allows (two on a Fronius); the nameplate 120 is read once at connect.

Sign conventions at this boundary (SunSpec -> ours, load arrow):
``W`` (+ = delivered by the inverter) -> ``p_w = -W``; ``VAr`` likewise; battery power from model 160's
``StCha``/``StDisCha`` modules (``DCW`` is unsigned) -> ``batt_p_w = DCW(StCha) - DCW(StDisCha)`` (+ = charge);
``pv_p_w = p_w - batt_p_w`` (AC side, <= 0); ``soc = ChaState / 100``; ``e_wh = soc * WHRtg``.
On a real device the module powers are DC at the battery, which differs from the AC side by the conversion
loss; the virtual device lumps that loss into the battery efficiency, so there they are the same.
How much PV is curtailed: with model 122, ``pv_curtail_w = WAval - PV delivered`` (``WAval``, the power the PV
could deliver now); without it only *whether* is observable: 0 unless ``St`` = 5 (THROTTLED), then NaN.

The setpoint ``batt_p_w`` is written into model 124 as Fronius documents it: (``InOutWRte_RvrtTms`` if the
address asks for one), then ``OutWRte = -batt_p_w`` and ``InWRte = +batt_p_w`` in % of ``WChaMax`` (one
write), then ``StorCtl_Mod = 3``, and read back; a read-back that differs is a ProtocolError. Modbus exception
0x03 on a write is SetpointRejected, 0x06/0x0A/0x0B are DeviceUnavailable, every other exception and any
malformed reply is a ProtocolError. After a failure the connection is dropped and re-opened (with a directory
scan) on a later call, no earlier than an exponentially growing back-off (0.2 s ... 5 s).

Grid-support setpoints (devices.pv.functions) go to models 123, 126 and 132, each followed by a read-back:
``p_limit_w`` -> ``WMaxLimPct`` (% of ``WMax`` of model 121) and ``WMaxLim_Ena = 1``; ``conn`` -> ``Conn``;
``tan_phi`` -> ``OutPFSet`` (signed cos phi, < 0 under-excited) and ``OutPFSet_Ena = 1``, then 126 ``ModEna = 0``;
``vv_ena`` -> 126 ``ModEna`` (enabling it sets ``OutPFSet_Ena = 0``); ``vw_ena`` -> 132 ``ModEna``; a whole curve
-> one write of ``ActPt, DeptRef, V1, Y1 .. V4, Y4`` of the curve (``V`` in % of ``VRef``, 126's ``VAr`` with
SunSpec's sign, + = injecting). ``?revert_s=N`` arms each function's own ``*_RvrtTms`` / ``RvrtTms`` too. A device
without the model a setpoint needs refuses it (SetpointRejected).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import parse_qs

from devices.base import Address, Capabilities, DeviceError, DeviceUnavailable, Measurement, ProtocolError, Setpoint, \
    SetpointRejected
from devices.connection import ReconnectingDriver
from devices.fronius.model import CHA_ST_EMPTY, CHA_ST_FULL, RVRT_S_MAX
from devices import tls
from devices.fronius.modbus_client import ModbusException, ModbusTcpClient
from devices.fronius.sunspec_map import (
    BASE_ADDRESS,
    END_MODEL_ID,
    INVERTERS,
    MAX_READ_REGISTERS,
    MODELS,
    STORAGE,
    SUNS,
    VV_DEPT_REF,
    VW_DEPT_REF,
    ModelValues,
    decode_model,
    rate_raw,
)
from devices.pv.functions import VV_Q, VV_V, VW_P, VW_V, pf_from_tan_phi

BASES = (BASE_ADDRESS, 0, 50000)
ST_THROTTLED = 5  # inverter model St: power limited
MAX_MODELS = 64
UNAVAILABLE_CODES = (0x06, 0x0A, 0x0B)

ReadFn = Callable[[int, int], Awaitable[list[int]]]


@dataclass(frozen=True)
class ModelEntry:
    id: int
    address: int  # of the model's ID register
    length: int  # L

    @property
    def end(self) -> int:
        return self.address + 2 + self.length


async def scan_directory(read: ReadFn, bases: tuple[int, ...] = BASES,
                         max_models: int = MAX_MODELS) -> list[ModelEntry]:
    """Find 'SunS' and walk the model headers to the end marker; bounded, so a bad map cannot loop."""
    for base in bases:
        try:
            if tuple(await read(base, 2)) == SUNS:
                break
        except ModbusException as exc:
            if exc.code not in (0x01, 0x02, 0x03):  # "nothing here": try the next base; anything else is real
                raise
    else:
        raise ProtocolError(f"no SunSpec map: 'SunS' not found at {', '.join(map(str, bases))}")
    entries: list[ModelEntry] = []
    addr = base + 2
    while True:
        if addr + 1 > 0xFFFF:
            raise ProtocolError(f"SunSpec model directory runs past the register space at {addr}")
        try:
            mid, length = await read(addr, 2)
        except ModbusException as exc:
            if exc.code != 0x02:
                raise
            mid, length = (await read(addr, 1))[0], 0  # a map may end right after the end marker's ID
        if mid == END_MODEL_ID:
            return entries
        if mid == 0:
            raise ProtocolError(f"model id 0 at {addr}")
        entries.append(ModelEntry(mid, addr, length))
        if len(entries) > max_models:
            raise ProtocolError(f"more than {max_models} SunSpec models: no end marker found")
        addr += 2 + length


def plan_reads(models: list[ModelEntry], limit: int = MAX_READ_REGISTERS) -> list[tuple[int, int]]:
    """Fewest (address, count) reads covering the given models, each at most ``limit`` registers."""
    spans: list[tuple[int, int]] = []
    for m in sorted(models, key=lambda e: e.address):
        if m.end - m.address > limit:
            raise ProtocolError(f"model {m.id} ({m.length + 2} registers) does not fit one read")
        if spans and m.end - spans[-1][0] <= limit and m.address >= spans[-1][0]:
            start, _ = spans[-1]
            spans[-1] = (start, max(spans[-1][0] + spans[-1][1], m.end) - start)
        else:
            spans.append((m.address, m.end - m.address))
    return spans


def _module_power(mppt: ModelValues, prefix: str) -> float:
    for group in mppt.repeats:
        label = group.get("IDStr")
        if isinstance(label, str) and label.lower().startswith(prefix.lower()):
            value = mppt.value("DCW", group)
            return math.nan if value is None else value
    raise ProtocolError(f"model 160 has no {prefix!r} module (modules: {[g.get('IDStr') for g in mppt.repeats]})")


def measurement_values(inverter: ModelValues, mppt: ModelValues, storage: ModelValues | None,
                       nameplate: ModelValues | None, status: ModelValues | None = None) -> dict[str, float]:
    """SunSpec model values -> our measurement names and sign convention (see the module docstring); without
    ``storage`` (a PV inverter) only the AC and PV values."""
    nan = math.nan
    w = inverter.value("W")
    if w is None:
        raise ProtocolError("inverter model: W not implemented")
    var = inverter.value("VAr")
    hz = inverter.value("Hz")
    volts = [v for v in (inverter.value(k) for k in ("PhVphA", "PhVphB", "PhVphC")) if v is not None]
    batt = 0.0 if storage is None else _module_power(mppt, "StCha") - _module_power(mppt, "StDisCha")
    p_w = -w
    w_aval = status.value("WAval") if status is not None else None
    if w_aval is not None:
        curtail = max(w_aval - max(batt - p_w, 0.0), 0.0)  # available minus the PV delivered on the AC side
    else:
        curtail = nan if inverter["St"] == ST_THROTTLED else 0.0
    common = {
        "p_w": p_w,
        "q_var": nan if var is None else -var,
        "pv_p_w": p_w - batt,
        "pv_curtail_w": curtail,
        "v_v": sum(volts) / len(volts) if volts else nan,
        "f_hz": nan if hz is None else hz,
    }
    if storage is None:
        return common
    cha_state = storage.value("ChaState")
    soc = nan if cha_state is None else cha_state / 100.0
    capacity = nameplate.value("WHRtg") if nameplate is not None else None
    w_cha_max = storage.value("WChaMax")
    charge_rating = (nameplate.value("MaxChaRte") if nameplate is not None else None) or w_cha_max
    discharge_rating = (nameplate.value("MaxDisChaRte") if nameplate is not None else None) or w_cha_max
    reserve = storage.value("MinRsvPct") or 0.0
    cha_st = storage["ChaSt"]
    return {
        **common,
        "batt_p_w": batt,
        "soc": soc,
        "e_wh": nan if capacity is None else soc * capacity,
        "p_charge_avail_w": nan if charge_rating is None else (0.0 if cha_st == CHA_ST_FULL else charge_rating),
        "p_discharge_avail_w": nan if discharge_rating is None else (
            0.0 if cha_st == CHA_ST_EMPTY or (cha_state is not None and cha_state <= reserve) else discharge_rating),
    }


class ReadBackMismatch(ProtocolError):
    """The device acknowledged a write but reads back other values (the link itself is fine)."""


class SunSpecDriver(ReconnectingDriver):
    schemes = ("sunspec+tcp",)
    query_keys = ("revert_s", *tls.TLS_QUERY_KEYS)

    def __init__(self, address: Address, capabilities: Capabilities, *, timeout_s: float = 2.0) -> None:
        super().__init__(address, capabilities, timeout_s=timeout_s)
        if not address.host:
            raise ValueError(f"{address.raw}: a SunSpec address needs a host (sunspec+tcp://host:port/unit)")
        try:
            self.unit = int(address.path) if address.path else 1
        except ValueError:
            raise ValueError(f"{address.raw}: unit id {address.path!r} is not a number") from None
        if not 1 <= self.unit <= 247:  # Modbus unit ids: 0 is broadcast, 248-255 reserved
            raise ValueError(f"{address.raw}: unit id {self.unit} outside 1..247")
        query = parse_qs(address.query)
        self.revert_s: int | None = int(query["revert_s"][0]) if "revert_s" in query else None
        if self.revert_s is not None and not 0 <= self.revert_s < RVRT_S_MAX:  # 0xFFFF reads as unimplemented
            raise ValueError(f"{address.raw}: revert_s must be 0..{RVRT_S_MAX - 1}")
        try:
            files = tls.files_from_query(query)
            self.ssl = tls.client_context(files) if files is not None else None
        except tls.TlsConfigError as exc:
            raise ValueError(f"{address.raw}: {exc}") from None
        # Modbus/TCP Security listens on 802 (IANA mbap/tls), plain Modbus TCP on 502
        self.port = address.port or (tls.MODBUS_TLS_PORT if self.ssl is not None else 502)
        # one driver for the hybrid and the PV-only family (one scheme, one class): a device whose capabilities
        # take a battery setpoint must have model 124 and the battery modules of 160
        self.requires_storage = "batt_p_w" in capabilities.setpoints
        self._client: ModbusTcpClient | None = None
        self.models: list[ModelEntry] = []
        self._spans: list[tuple[int, int]] = []
        self._needed: dict[str, ModelEntry] = {}
        self._nameplate: ModelValues | None = None
        self._common: ModelValues | None = None
        self._storage: ModelValues | None = None
        self._settings: ModelValues | None = None
        self._optional: dict[int, ModelEntry] = {}  # 121, 123, 126, 132 where the device has them

    async def identity(self) -> Mapping[str, object]:
        c = self._common
        info: dict[str, object] = {"address": self.address.raw, "protocol": "sunspec+tcp", "unit": self.unit,
                                   "models": [m.id for m in self.models]}
        if c is not None:
            info.update(manufacturer=c["Mn"], model=c["Md"], options=c["Opt"], version=c["Vr"], serial=c["SN"])
        return info

    # -- the link (ReconnectingDriver) ---------------------------------------------------------------------
    def _link_up(self) -> bool:
        return self._up and self._client is not None and self._client.is_open

    async def _open_link(self) -> None:
        self._client = ModbusTcpClient(self.address.host or "", self.port, self.unit, self.timeout_s, ssl=self.ssl)
        await self._client.open()
        await self._discover(self._client)

    async def _close_link(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def _read_once(self) -> Measurement:
        blocks = await self._read_blocks()
        values = measurement_values(blocks["inverter"], blocks["mppt"], blocks.get("storage"), self._nameplate,
                                    blocks.get("status"))
        self._storage = blocks.get("storage")
        wanted = self.capabilities.measurements
        return Measurement(self.clock(), {k: v for k, v in values.items() if k in wanted})

    async def _write_once(self, setpoint: Setpoint) -> None:
        values = dict(setpoint.values)
        try:
            if "batt_p_w" in values:
                await self._write_storage(float(values.pop("batt_p_w")))
            if values:
                await self._write_functions(values)
        except ModbusException as exc:
            if exc.code == 0x03:
                raise SetpointRejected(f"{self.address.raw}: device refused {dict(setpoint.values)}: {exc}") from exc
            if exc.code == 0x01 and self.ssl is not None:  # Modbus/TCP Security: the role may not write
                raise SetpointRejected(f"{self.address.raw}: the device does not authorise this certificate's "
                                       f"role to write ({exc})") from exc
            raise

    def _translate(self, exc: BaseException) -> DeviceError:
        if isinstance(exc, ModbusException) and exc.code in UNAVAILABLE_CODES:
            return DeviceUnavailable(f"{self.address.raw}: {exc}")
        return super()._translate(exc)

    def _keeps_link(self, error: DeviceError) -> bool:
        return isinstance(error, (SetpointRejected, ReadBackMismatch))

    # -- SunSpec -------------------------------------------------------------------------------------------
    async def _discover(self, client: ModbusTcpClient) -> None:
        self.models = await scan_directory(client.read_holding)
        by_id: dict[int, ModelEntry] = {}
        for m in self.models:
            by_id.setdefault(m.id, m)
        inverter = next((by_id[i] for i in INVERTERS if i in by_id), None)
        required = [("inverter 101/102/103", inverter), ("mppt 160", by_id.get(160)), ("common 1", by_id.get(1))]
        if self.requires_storage:
            required.append(("storage 124", by_id.get(124)))
        missing = [name for name, entry in required if not entry]
        if missing:
            raise ProtocolError(f"{self.address.raw}: SunSpec models missing: {', '.join(missing)} "
                                f"(found {[m.id for m in self.models]})")
        assert inverter is not None
        self._needed = {"inverter": inverter, "mppt": by_id[160]}
        if self.requires_storage:
            self._needed["storage"] = by_id[124]
        if 122 in by_id:
            self._needed["status"] = by_id[122]
        self._optional = {mid: by_id[mid] for mid in (121, 123, 126, 132) if mid in by_id}
        self._spans = plan_reads(list(self._needed.values()))
        self._common = await self._read_model(client, by_id[1])
        self._nameplate = await self._read_model(client, by_id[120]) if 120 in by_id else None
        self._settings = await self._read_model(client, by_id[121]) if 121 in by_id else None
        self._storage = await self._read_model(client, by_id[124]) if self.requires_storage else None

    async def _read_model(self, client: ModbusTcpClient, entry: ModelEntry) -> ModelValues:
        regs: list[int] = []
        for addr in range(entry.address, entry.end, MAX_READ_REGISTERS):
            regs += await client.read_holding(addr, min(MAX_READ_REGISTERS, entry.end - addr))
        return decode_model(regs, expected_id=entry.id)

    async def _read_blocks(self) -> dict[str, ModelValues]:
        assert self._client is not None
        spans = [(addr, await self._client.read_holding(addr, count)) for addr, count in self._spans]
        out = {}
        for key, entry in self._needed.items():
            start, regs = next((a, r) for a, r in spans if a <= entry.address and entry.end <= a + len(r))
            out[key] = decode_model(regs[entry.address - start:entry.end - start], expected_id=entry.id)
        return out

    async def _write_storage(self, p_w: float) -> None:
        client, storage = self._client, self._storage
        assert client is not None and storage is not None
        entry = self._needed["storage"]
        w_cha_max, sf = storage.value("WChaMax"), storage["InOutWRte_SF"]
        if not w_cha_max or not isinstance(sf, int):
            raise ProtocolError(f"{self.address.raw}: model 124 lacks WChaMax or InOutWRte_SF")
        try:
            raw = rate_raw(p_w, w_cha_max, sf)
        except ValueError as exc:
            raise SetpointRejected(f"{self.address.raw}: {exc}") from None
        off = STORAGE.offsets()
        if self.revert_s is not None:
            await client.write_register(entry.address + off["InOutWRte_RvrtTms"], self.revert_s)
        await client.write_registers(entry.address + off["OutWRte"], [-raw & 0xFFFF, raw & 0xFFFF])
        await client.write_register(entry.address + off["StorCtl_Mod"], 3)
        back = decode_model(await client.read_holding(entry.address, entry.length + 2), expected_id=124)
        expected = {"StorCtl_Mod": 3, "OutWRte": -raw, "InWRte": raw}
        if self.revert_s is not None:
            expected["InOutWRte_RvrtTms"] = self.revert_s
        wrong = {k: (back[k], v) for k, v in expected.items() if back[k] != v}
        if wrong:
            raise ReadBackMismatch(f"{self.address.raw}: model 124 read-back differs (got, written): {wrong}")
        self._storage = back

    # -- grid-support functions (models 123, 126, 132) ------------------------------------------------------
    def _model_entry(self, mid: int, what: str) -> ModelEntry:
        entry = self._optional.get(mid)
        if entry is None:
            raise SetpointRejected(f"{self.address.raw}: {what} needs SunSpec model {mid}, which the device lacks "
                                   f"(models {[m.id for m in self.models]})")
        return entry

    async def _write_points(self, mid: int, what: str, points: list[tuple[str, int]]) -> None:
        """Write points of one model (by name, raw values: fixed block or the first curve), then read back."""
        assert self._client is not None
        entry = self._model_entry(mid, what)
        mdef = MODELS[mid]
        offsets = mdef.offsets() | (mdef.group_offsets(0) if mdef.repeating else {})
        runs: list[tuple[int, list[int]]] = []
        for name, raw in points:  # consecutive registers go in one 0x10 write
            addr = entry.address + offsets[name]
            if runs and runs[-1][0] + len(runs[-1][1]) == addr:
                runs[-1][1].append(raw & 0xFFFF)
            else:
                runs.append((addr, [raw & 0xFFFF]))
        for addr, regs in runs:
            if len(regs) == 1:
                await self._client.write_register(addr, regs[0])
            else:
                await self._client.write_registers(addr, regs)
        back = await self._read_model(self._client, entry)
        group = back.repeats[0] if back.repeats else {}
        got = {name: (back.fixed[name] if name in back.fixed else group.get(name)) for name, _ in points}
        wrong = {name: (got[name], raw) for name, raw in points if got[name] != raw}
        if wrong:
            raise ReadBackMismatch(f"{self.address.raw}: model {mid} read-back differs (got, written): {wrong}")

    def _sf(self, model: ModelValues, name: str) -> int:
        sf = model[name]
        if not isinstance(sf, int) or not -10 <= sf <= 10:
            raise ProtocolError(f"{self.address.raw}: model {model.id} scale factor {name}={sf!r}")
        return sf

    async def _write_functions(self, values: dict[str, float]) -> None:
        assert self._client is not None
        revert = self.revert_s
        if "conn" in values:
            pts = ([("Conn_RvrtTms", revert)] if revert is not None else []) + [("Conn", int(values["conn"]))]
            await self._write_points(123, "conn", pts)
        if "p_limit_w" in values:
            entry = self._model_entry(123, "p_limit_w")
            w_max = self._settings.value("WMax") if self._settings is not None else None
            if not w_max:
                raise ProtocolError(f"{self.address.raw}: p_limit_w needs WMax (model 121)")
            ctl = await self._read_model(self._client, entry)
            pct = 100.0 * values["p_limit_w"] / w_max
            if not 0.0 <= pct <= 100.0 + 1e-9:
                raise SetpointRejected(f"{self.address.raw}: p_limit_w={values['p_limit_w']:g} is {pct:.1f} % of "
                                       f"WMax={w_max:g} W")
            raw = round(min(pct, 100.0) / 10.0 ** self._sf(ctl, "WMaxLimPct_SF"))
            pts = ([("WMaxLimPct_RvrtTms", revert)] if revert is not None else [])
            await self._write_points(123, "p_limit_w", pts + [("WMaxLimPct", raw), ("WMaxLim_Ena", 1)])
        if "tan_phi" in values:
            entry = self._model_entry(123, "tan_phi")
            ctl = await self._read_model(self._client, entry)
            raw = round(pf_from_tan_phi(values["tan_phi"]) / 10.0 ** self._sf(ctl, "OutPFSet_SF"))
            pts = ([("OutPFSet_RvrtTms", revert)] if revert is not None else [])
            await self._write_points(123, "tan_phi", pts + [("OutPFSet", raw), ("OutPFSet_Ena", 1)])
            if 126 in self._optional:
                await self._write_points(126, "tan_phi", [("ModEna", 0)])
        for mid, names_v, names_y, y, dept, sign in ((126, VV_V, VV_Q, "VAr", VV_DEPT_REF, -1.0),
                                                     (132, VW_V, VW_P, "W", VW_DEPT_REF, 1.0)):
            if names_v[0] not in values:
                continue
            what = "a volt-var curve" if mid == 126 else "a volt-watt curve"
            curve = await self._read_model(self._client, self._model_entry(mid, what))
            n_pt = curve["NPt"]
            if not isinstance(n_pt, int) or n_pt < len(names_v):
                raise SetpointRejected(f"{self.address.raw}: {what} of {len(names_v)} points, device has NPt={n_pt}")
            v_sf, y_sf = self._sf(curve, "V_SF"), self._sf(curve, "DeptRef_SF")
            pts = [("ActPt", len(names_v)), ("DeptRef", dept)]
            for k, (nv, ny) in enumerate(zip(names_v, names_y), start=1):
                pts += [(f"V{k}", round(100.0 * values[nv] / 10.0 ** v_sf)),
                        (f"{y}{k}", round(sign * values[ny] / 10.0 ** y_sf))]
            await self._write_points(mid, what, pts)
        for name, mid in (("vv_ena", 126), ("vw_ena", 132)):
            if name in values:
                ena = int(values[name])
                pts = ([("RvrtTms", revert)] if revert is not None else []) + [("ModEna", ena)]
                await self._write_points(mid, name, pts)
                if name == "vv_ena" and ena and 123 in self._optional:
                    await self._write_points(123, name, [("OutPFSet_Ena", 0)])
