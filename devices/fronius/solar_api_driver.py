"""Fronius Solar API v1 driver, read-only monitoring (as the original S4G DSF used it): ``fronius+http://host[:port]``.

Each read is three GET requests on one keep-alive connection: GetPowerFlowRealtimeData.fcgi,
GetInverterRealtimeData.cgi (Scope=Device, DeviceId=1, CommonInverterData) and GetStorageRealtimeData.cgi
(Scope=System). Fronius asks clients to stay below one request per second on real devices, so poll a real
one every 3 s or slower.

Sign conventions at this boundary (Fronius -> ours, load arrow):
``Inverters."1".P`` (+ = AC output) -> ``p_w = -P``; ``Site.P_Akku`` (- = charging) -> ``batt_p_w = -P_Akku``;
``pv_p_w = p_w - batt_p_w`` (AC side; ``P_PV`` is DC on hybrids); ``soc = SOC / 100``;
``e_wh = StateOfCharge_Relative / 100 * Capacity_Maximum``; ``v_v = UAC``; ``f_hz = FAC``; and two values that
are not device measurements of the family but come free with the power flow: ``p_grid_w = P_Grid``
(+ = import, already our sign) and ``site_load_w = -P_Load`` (+ = consumption). ``null`` for ``P`` / ``P_Akku``
means "inverter not running" / "no battery active" and reads as 0 W.

The Solar API cannot set anything: this driver accepts no setpoint (its capabilities have none, a write is
SetpointRejected). Head.Status codes 5, 8 and 12 (timeouts, device not available) are DeviceUnavailable,
every other non-zero code, a non-200 HTTP status and any malformed JSON are ProtocolError.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Any
from collections.abc import Mapping

import h11

from devices.base import Address, Capabilities, DeviceUnavailable, Measurement, ProtocolError, Setpoint, \
    SetpointRejected
from devices import wire_json
from devices.connection import ReconnectingDriver
from devices.streams import close_stream, open_stream

POWER_FLOW = "/solar_api/v1/GetPowerFlowRealtimeData.fcgi"
INVERTER = "/solar_api/v1/GetInverterRealtimeData.cgi?Scope=Device&DeviceId=1&DataCollection=CommonInverterData"
STORAGE = "/solar_api/v1/GetStorageRealtimeData.cgi?Scope=System"
API_VERSION = "/solar_api/GetAPIVersion.cgi"
MEASUREMENTS = ("p_w", "pv_p_w", "batt_p_w", "soc", "e_wh", "v_v", "f_hz", "p_grid_w", "site_load_w")
UNAVAILABLE_STATUS = (5, 8, 12)
MAX_HEAD = 16 * 1024
MAX_BODY = 4 * 1024 * 1024


@dataclass(frozen=True)
class Response:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes


# -- JSON decoding (pure) ----------------------------------------------------------------------------------------


def _get(doc: Any, *path: str) -> Any:
    node = doc
    for key in path:
        if not isinstance(node, dict) or key not in node:
            raise ProtocolError(f"Solar API reply lacks {'.'.join(path)}")
        node = node[key]
    return node


def _number(value: Any, what: str, null: float | None = None) -> float:
    """A JSON number (``null`` -> ``null`` argument, or a ProtocolError if None)."""
    if value is None and null is not None:
        return null
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ProtocolError(f"Solar API field {what} is {value!r}, expected a number")
    return float(value)


def check_head(doc: Any) -> None:
    """Head.Status.Code 0 or a typed error."""
    code = _get(doc, "Head", "Status", "Code")
    if isinstance(code, bool) or not isinstance(code, int):
        raise ProtocolError(f"Solar API Head.Status.Code is {code!r}")
    if code == 0:
        return
    reason = _get(doc, "Head", "Status").get("Reason", "")
    message = f"Solar API status {code}: {reason!s:.200}"
    if code in UNAVAILABLE_STATUS:
        raise DeviceUnavailable(message)
    raise ProtocolError(message)


def parse_power_flow(doc: Any) -> dict[str, float]:
    check_head(doc)
    site = _get(doc, "Body", "Data", "Site")
    inverters = _get(doc, "Body", "Data", "Inverters")
    if not isinstance(site, dict) or not isinstance(inverters, dict) or not inverters:
        raise ProtocolError("Solar API power flow without Site or Inverters")
    inverter = inverters.get("1", next(iter(inverters.values())))
    if not isinstance(inverter, dict):
        raise ProtocolError(f"Solar API power flow inverter entry is {inverter!r}")
    soc = inverter.get("SOC")
    return {
        "p_ac_out_w": _number(inverter.get("P"), "Inverters.P", null=0.0),
        "p_akku_w": _number(site.get("P_Akku"), "Site.P_Akku", null=0.0),
        "p_grid_w": _number(site.get("P_Grid"), "Site.P_Grid", null=math.nan),
        "p_load_w": _number(site.get("P_Load"), "Site.P_Load", null=math.nan),
        "soc_pct": _number(soc, "Inverters.SOC", null=math.nan),
    }


def parse_inverter_common(doc: Any) -> dict[str, float]:
    check_head(doc)
    data = _get(doc, "Body", "Data")
    return {key: _number(_get(data, name, "Value"), f"{name}.Value", null=math.nan)
            for key, name in (("uac_v", "UAC"), ("fac_hz", "FAC"))}


def parse_storage_system(doc: Any) -> dict[str, float]:
    check_head(doc)
    data = _get(doc, "Body", "Data")
    if not isinstance(data, dict) or not data:
        raise ProtocolError("Solar API storage reply lists no battery")
    controller = _get(next(iter(data.values())), "Controller")
    return {"capacity_wh": _number(_get(controller, "Capacity_Maximum"), "Capacity_Maximum"),
            "soc_pct": _number(_get(controller, "StateOfCharge_Relative"), "StateOfCharge_Relative")}


def measurement_values(flow: Mapping[str, float], inverter: Mapping[str, float],
                       storage: Mapping[str, float]) -> dict[str, float]:
    """Fronius sign conventions -> ours (see the module docstring)."""
    p_w = -flow["p_ac_out_w"]
    batt = -flow["p_akku_w"]
    soc_pct = flow["soc_pct"] if math.isfinite(flow["soc_pct"]) else storage["soc_pct"]
    return {"p_w": p_w, "pv_p_w": p_w - batt, "batt_p_w": batt, "soc": soc_pct / 100.0,
            "e_wh": storage["soc_pct"] / 100.0 * storage["capacity_wh"], "v_v": inverter["uac_v"],
            "f_hz": inverter["fac_hz"], "p_grid_w": flow["p_grid_w"], "site_load_w": -flow["p_load_w"]}


def decode_json(response: Response, target: str) -> Any:
    if response.status != 200:
        raise ProtocolError(f"GET {target}: HTTP {response.status} {response.reason}")
    try:
        return wire_json.loads(response.body, max_bytes=MAX_BODY)
    except wire_json.WireDecodeError as exc:
        raise ProtocolError(f"GET {target}: body is not JSON: {exc}") from None


# -- driver ------------------------------------------------------------------------------------------------------


class SolarApiDriver(ReconnectingDriver):
    schemes = ("fronius+http",)

    def __init__(self, address: Address, capabilities: Capabilities, *, timeout_s: float = 2.0) -> None:
        # Read-only whatever the family could do over SunSpec: no setpoint is accepted on this path.
        super().__init__(address, Capabilities(measurements=MEASUREMENTS, setpoints={}), timeout_s=timeout_s)
        if not address.host:
            raise ValueError(f"{address.raw}: a Solar API address needs a host (fronius+http://host:port)")
        self.host, self.port = address.host, address.port or 80
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._http: h11.Connection | None = None
        self.api: dict[str, Any] = {}

    async def _write(self, setpoint: Setpoint) -> None:
        raise SetpointRejected(f"{self.address.raw}: the Solar API is read-only; use sunspec+tcp to set "
                               f"{', '.join(setpoint.values)}")

    async def identity(self) -> Mapping[str, Any]:
        return {"address": self.address.raw, "protocol": "fronius+http", **self.api}

    # -- the link (ReconnectingDriver) -------------------------------------------------------------------
    async def _open_link(self) -> None:
        await self._dial()
        doc = await self._get_json(API_VERSION)
        if not isinstance(doc, dict) or doc.get("APIVersion") != 1:
            raise ProtocolError(f"{self.address.raw}: not a Solar API v1 device ({str(doc)[:120]})")
        self.api = {"api_version": 1, "base_url": doc.get("BaseURL"),
                    "compatibility_range": doc.get("CompatibilityRange")}

    async def _read_once(self) -> Measurement:
        flow = parse_power_flow(await self._get_json(POWER_FLOW))
        inverter = parse_inverter_common(await self._get_json(INVERTER))
        storage = parse_storage_system(await self._get_json(STORAGE))
        return Measurement(self.clock(), measurement_values(flow, inverter, storage))

    async def _write_once(self, setpoint: Setpoint) -> None:
        raise AssertionError("unreachable: _write refuses every setpoint")

    async def _close_link(self) -> None:
        writer, self._writer, self._reader, self._http = self._writer, None, None, None
        await close_stream(writer)

    # -- HTTP (h11) ----------------------------------------------------------------------------------------
    async def _dial(self) -> None:
        await self._close_link()
        self._reader, self._writer = await open_stream(self.host, self.port, self.timeout_s, self.address.raw)
        self._http = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)

    async def _get_json(self, target: str) -> Any:
        for attempt in (1, 2):
            if self._writer is None:
                await self._dial()
            try:
                response = await self._exchange(target)
            except ProtocolTimeout:
                raise
            except DeviceUnavailable:
                # A keep-alive connection the device closed while idle: one fresh try, then give up.
                await self._close_link()
                if attempt == 2:
                    raise
                continue
            return decode_json(response, target)
        raise AssertionError("unreachable")

    async def _exchange(self, target: str) -> Response:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._roundtrip(target)
        except TimeoutError as exc:
            raise ProtocolTimeout(f"{self.address.raw}: no reply to GET {target} within {self.timeout_s:g} s") from exc
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise DeviceUnavailable(f"{self.address.raw}: connection lost: {exc!r}") from exc

    async def _roundtrip(self, target: str) -> Response:
        assert self._reader is not None and self._writer is not None and self._http is not None
        http = self._http
        request = h11.Request(method="GET", target=target, headers=[
            ("Host", f"{self.host}:{self.port}"), ("Accept", "application/json"), ("Connection", "keep-alive")])
        self._writer.write((http.send(request) or b"") + (http.send(h11.EndOfMessage()) or b""))
        await self._writer.drain()
        head: h11.Response | None = None
        body = bytearray()
        received = 0
        while True:
            try:
                event = http.next_event()
            except h11.RemoteProtocolError as exc:
                if received == 0:  # closed before a single byte: an idle keep-alive the device dropped
                    raise DeviceUnavailable(f"{self.address.raw}: connection closed before a response") from exc
                raise ProtocolError(f"{self.address.raw}: malformed HTTP response to GET {target}: {exc}") from exc
            if event is h11.NEED_DATA:
                data = await self._reader.read(65536)
                received += len(data)
                http.receive_data(data)
            elif isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    raise ProtocolError(f"{self.address.raw}: body larger than {MAX_BODY} bytes")
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise DeviceUnavailable(f"{self.address.raw}: connection closed before a response")
        assert head is not None
        if http.our_state is h11.MUST_CLOSE or http.their_state is h11.MUST_CLOSE:
            await self._close_link()  # the device ends the connection after this reply
        else:
            http.start_next_cycle()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in head.headers}
        return Response(head.status_code, head.reason.decode("latin-1"), headers, bytes(body))


class ProtocolTimeout(DeviceUnavailable):
    """No reply in time: not retried on a fresh connection (the device is hung, not just idle-closed)."""
