"""A virtual Fronius behind the Fronius Solar API v1 (HTTP/JSON, read-only), scheme ``fronius+http``.

Served requests (field names, units, nesting and sign conventions as Fronius documents them, GEN24 style):

* ``/solar_api/GetAPIVersion.cgi``
* ``/solar_api/v1/GetPowerFlowRealtimeData.fcgi``: ``Site.P_Grid`` (+ = import), ``P_Load`` (- = consumption),
  ``P_Akku`` (- = charging, + = discharging), ``P_PV`` (+ = production, DC side), ``Inverters."1".P``
  (+ = AC output), ``SOC`` (%)
* ``/solar_api/v1/GetInverterRealtimeData.cgi``: Scope=System, or Scope=Device&DeviceId=1 with
  DataCollection CumulationInverterData, CommonInverterData or 3PInverterData (PAC < 0 when consuming)
* ``/solar_api/v1/GetStorageRealtimeData.cgi``: Scope=System, or Scope=Device&DeviceId=0
  (``Current_DC`` + = charging)
* ``/solar_api/v1/GetMeterRealtimeData.cgi``: Scope=System, or Scope=Device&DeviceId=0, a grid meter
  (``Meter_Location_Current`` 0: ``PowerReal_P_Sum`` + = import from the grid)

Errors: a missing or invalid argument (Scope, DataCollection, DeviceId that is not a number) -> Head.Status.Code 6
"Argument Error" with a CGI-Args reason, as a GEN24 answers; a DeviceId that names no device -> 12
DeviceNotAvailable; both with HTTP 200 and an empty ``Body.Data``. An argument name or value that is not printable
ASCII of at most 64 characters (a 5000-digit DeviceId, Arabic-Indic digits) -> HTTP 400 with Code 6. An unknown
request -> HTTP 404 (how the Solar API marks a request as not available), with Code 1 NotImplemented in the body.
Methods other than GET/HEAD -> 405. A malformed HTTP request (h11 decides; an obsolete folded header line is
unfolded, as RFC 7230 3.2.4 allows) -> 400 and the connection is closed; an HTTP version other than 1.0/1.1 -> 505.
Every answer other than 200 is counted in ``counters`` (``http_400``, ... and ``rejected``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime, UTC
from urllib.parse import parse_qs, urlsplit
from typing import Any
from collections.abc import Callable
from collections import Counter

import h11
from pydantic import BaseModel

from devices.family import DeviceContext, Family
from devices.fronius.model import CHA_ST_EMPTY, CHA_ST_FULL, FroniusBank, FroniusConfig, FroniusState
from devices.fronius.sunspec_map import battery_voltage
from devices.tcp_server import ServedConnection, TcpServer
from devices.virtual import VirtualDevice

log = logging.getLogger(__name__)

OKAY, NOT_IMPLEMENTED, ARGUMENT_ERROR, DEVICE_NOT_AVAILABLE = 0, 1, 6, 12
STATUS_NAMES = {0: "OKAY", 1: "NotImplemented", 2: "Uninitialized", 3: "Initialized", 4: "Running", 5: "Timeout",
                6: "Argument Error", 7: "LNRequestError", 8: "LNRequestTimeout", 9: "LNParseError",
                10: "ConfigIOError", 11: "NotSupported", 12: "DeviceNotAvailable", 255: "UnknownError"}
INVERTER_ID, STORAGE_ID, METER_ID = "1", "0", "0"
COLLECTIONS = ("CumulationInverterData", "CommonInverterData", "3PInverterData")
MAX_HEAD = 16 * 1024  # request head (and a request body, which a GET should not have)
MAX_ARGUMENT = 64  # characters in a CGI argument value; a longer one is a malformed request


class ArgumentError(Exception):
    pass


def _num(value: float | None, digits: int = 3) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def _vu(value: float | None, unit: str) -> dict[str, Any]:
    return {"Unit": unit, "Value": _num(value)}


@dataclass(frozen=True)
class Request:
    """One HTTP request as the Solar API handlers see it."""

    method: str
    target: str

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, str]:
        """Query parameters, last value wins."""
        return {k: v[-1] for k, v in parse_qs(urlsplit(self.target).query, keep_blank_values=True).items()}


class SolarApiServer:
    """Serves one member of a :class:`FroniusBank` over the Solar API (the bank is only read)."""

    def __init__(self, bank: FroniusBank, cfg: FroniusConfig, device_id: str = "device", index: int = 0,
                 clock: Callable[[], float] = time.time, *, max_connections: int = 16,
                 idle_timeout_s: float | None = 30.0) -> None:
        self.bank, self.cfg, self.index, self.clock = bank, cfg, index, clock
        self.serial = cfg.serial_for(device_id)
        self.tcp = TcpServer(self._serve, name="solar-api", max_connections=max_connections,
                             idle_timeout_s=idle_timeout_s)
        self.silent = False
        self._wake = asyncio.Event()
        self._corrupt = False

    # -- lifecycle and fault injection ---------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self.tcp.port

    @property
    def counters(self) -> Counter[str]:
        return self.tcp.counters

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        return await self.tcp.start(host, port)

    async def stop(self) -> None:
        self._wake.set()
        await self.tcp.stop()
        self._wake = asyncio.Event()

    def set_silent(self, silent: bool) -> None:
        self.silent = silent
        if not silent:
            self._wake.set()
            self._wake = asyncio.Event()

    def corrupt_next_reply(self) -> None:
        self._corrupt = True

    def open_connections(self) -> int:
        return self.tcp.open_connections()

    # -- HTTP (h11) ------------------------------------------------------------------------------------------
    async def _serve(self, conn: ServedConnection) -> None:
        http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        request: h11.Request | None = None
        body_bytes = 0
        while True:
            try:
                event = http.next_event()
            except h11.RemoteProtocolError as exc:
                conn.count(f"http_{exc.error_status_hint}")
                await self._send_error(conn, http, exc.error_status_hint, str(exc))
                return
            if event is h11.NEED_DATA:
                http.receive_data(await conn.read(65536))  # b"" is the end of the connection
                continue
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                request, body_bytes = event, 0
            elif isinstance(event, h11.Data):
                body_bytes += len(event.data)  # a GET needs no body: read and dropped, bounded
                if body_bytes > MAX_HEAD:
                    conn.count("http_413")
                    await self._send_error(conn, http, 413, "request body too large")
                    return
            elif isinstance(event, h11.EndOfMessage) and request is not None:
                if self.silent:  # a hung device: the connection stays open, nothing comes back
                    await self._wake.wait()
                    return
                await self._answer(conn, http, request)
                if http.our_state is h11.MUST_CLOSE:
                    return
                http.start_next_cycle()
                request = None

    async def _answer(self, conn: ServedConnection, http: h11.Connection, event: h11.Request) -> None:
        method, target = event.method.decode("ascii"), event.target.decode("ascii", "replace")
        close = False
        extra: dict[str, str] | None
        if event.http_version not in (b"1.0", b"1.1"):
            status, body, extra, close = 505, b"HTTP version not supported\n", {"Content-Type": "text/plain"}, True
        elif not target.startswith("/"):
            status, body, extra, close = 400, b"malformed request target\n", {"Content-Type": "text/plain"}, True
        else:
            try:
                status, body, extra = self.respond(Request(method, target))
            except Exception:  # a bug here must not take the device's other connections down
                log.exception("%s: Solar API request %s failed", self.serial, target)
                status, body, extra = 500, self._dump(self._envelope({}, 255, "internal error", {})), None
        if status != 200:
            conn.count(f"http_{status}")
        if self._corrupt:
            self._corrupt = False
            body = body[: len(body) // 2]  # valid HTTP framing, truncated JSON
        headers = {"Content-Type": "application/json", **(extra or {}), "Content-Length": str(len(body))}
        if close:
            headers["Connection"] = "close"
        out = http.send(h11.Response(status_code=status, headers=list(headers.items()))) or b""
        if method != "HEAD":
            out += http.send(h11.Data(data=body)) or b""
        out += http.send(h11.EndOfMessage()) or b""
        await conn.send(out)

    async def _send_error(self, conn: ServedConnection, http: h11.Connection, status: int, message: str) -> None:
        """A malformed request: a plain-text error and the connection closes (h11 cannot resynchronise)."""
        if http.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = f"{message[:200]}\n".encode("utf-8", "replace")
        try:
            out = http.send(h11.Response(status_code=status, headers=[
                ("Content-Type", "text/plain"), ("Content-Length", str(len(body))), ("Connection", "close")]))
            out = (out or b"") + (http.send(h11.Data(data=body)) or b"") + (http.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:
            return
        await conn.send(out)

    def respond(self, request: Request) -> tuple[int, bytes, dict[str, str] | None]:
        """HTTP status, JSON body and extra headers for one request."""
        if request.method not in ("GET", "HEAD"):
            return 405, self._dump(self._envelope({}, NOT_IMPLEMENTED, f"method {request.method} not allowed", {})), \
                {"Allow": "GET, HEAD"}
        path = request.path
        if path == "/solar_api/GetAPIVersion.cgi":
            return 200, self._dump({"APIVersion": 1, "BaseURL": "/solar_api/v1/", "CompatibilityRange": "1.8-1"}), None
        handler = self._handlers().get(path)
        if handler is None:
            return 404, self._dump(self._envelope({}, NOT_IMPLEMENTED, f"request {path} not available", {})), None
        args = request.query
        bad = next(((k, v) for k, v in args.items() if not _plain(k) or not _plain(v)), None)
        if bad is not None:  # not a value any Solar API argument takes: refused before any handler sees it
            name = bad[0] if _plain(bad[0]) else "?"
            return 400, self._dump(self._envelope({}, ARGUMENT_ERROR, f"CGI-Args: Invalid parameter for attribute "
                                                  f"'{name}' (printable ASCII, at most {MAX_ARGUMENT} characters)",
                                                  {})), None
        state = self.bank.state(self.index)
        try:
            arguments, data = handler(state, _Args(args))
        except _DeviceMissing as exc:
            self.tcp.count(f"status_{DEVICE_NOT_AVAILABLE}")
            return 200, self._dump(self._envelope(exc.arguments, DEVICE_NOT_AVAILABLE, str(exc), {})), None
        except ArgumentError as exc:
            self.tcp.count(f"status_{ARGUMENT_ERROR}")
            return 200, self._dump(self._envelope(exc.args[1], ARGUMENT_ERROR, exc.args[0], {})), None
        return 200, self._dump(self._envelope(arguments, OKAY, "", data)), None

    def _dump(self, doc: dict[str, Any]) -> bytes:
        return json.dumps(doc, indent=1, allow_nan=False).encode()

    def _envelope(self, arguments: dict[str, str], code: int, reason: str, data: dict[str, Any]) -> dict[str, Any]:
        stamp = datetime.fromtimestamp(self.clock(), UTC).replace(microsecond=0).isoformat()
        return {"Body": {"Data": data},
                "Head": {"RequestArguments": arguments,
                         "Status": {"Code": code, "Reason": reason, "UserMessage": ""},
                         "Timestamp": stamp}}

    def _handlers(self) -> dict[str, Callable[[FroniusState, _Args], tuple[dict[str, str], dict[str, Any]]]]:
        return {
            "/solar_api/v1/GetPowerFlowRealtimeData.fcgi": self._power_flow,
            "/solar_api/v1/GetInverterRealtimeData.cgi": self._inverter,
            "/solar_api/v1/GetStorageRealtimeData.cgi": self._storage,
            "/solar_api/v1/GetMeterRealtimeData.cgi": self._meter,
        }

    # -- requests --------------------------------------------------------------------------------------------
    def _power_flow(self, st: FroniusState, args: _Args) -> tuple[dict[str, str], dict[str, Any]]:
        p_ac = -st.p_w  # + = AC output of the inverter
        load = st.site_load_w
        imported = max(st.grid_p_w, 0.0)
        exported = max(-st.grid_p_w, 0.0)
        autonomy = None if load <= 0 else max(0.0, min(100.0, (1.0 - imported / load) * 100.0))
        self_consumption = None if p_ac <= 0 else max(0.0, min(100.0, (1.0 - exported / p_ac) * 100.0))
        mode = {CHA_ST_FULL: "battery full", CHA_ST_EMPTY: "nearly depleted"}.get(st.cha_st, "normal")
        site = {
            "BackupMode": False, "BatteryStandby": False, "E_Day": None, "E_Total": _num(st.e_ac_out_wh),
            "E_Year": None, "Meter_Location": "grid", "Mode": "bidirectional",
            "P_Akku": _num(-st.batt_p_w), "P_Grid": _num(st.grid_p_w), "P_Load": _num(-load),
            "P_PV": _num(st.pv_dc_w), "rel_Autonomy": _num(autonomy), "rel_SelfConsumption": _num(self_consumption),
        }
        inverter = {"Battery_Mode": mode, "DT": 1, "E_Day": None, "E_Total": _num(st.e_ac_out_wh), "E_Year": None,
                    "P": _num(p_ac), "SOC": _num(st.soc * 100.0)}
        return {}, {"Inverters": {INVERTER_ID: inverter}, "Site": site, "Smartloads": {"Ohmpilots": {}},
                    "Version": "12"}

    def _inverter(self, st: FroniusState, args: _Args) -> tuple[dict[str, str], dict[str, Any]]:
        scope = args.choice("Scope", ("Device", "System"), {"DeviceClass": "Inverter"})
        p_ac = -st.p_w
        running = abs(p_ac) > 0.5 or abs(st.batt_p_w) > 0.5
        status = {"ErrorCode": 0, "InverterState": "Running" if running else "Sleeping",
                  "StatusCode": 7 if running else 8}
        if scope == "System":
            arguments = {"DeviceClass": "Inverter", "Scope": "System"}
            values: Callable[[float | None], dict[str, float | None]] = lambda v: {INVERTER_ID: _num(v)}  # noqa: E731
            return arguments, {"PAC": {"Unit": "W", "Values": values(p_ac)},
                               "DAY_ENERGY": {"Unit": "Wh", "Values": {INVERTER_ID: None}},
                               "YEAR_ENERGY": {"Unit": "Wh", "Values": {INVERTER_ID: None}},
                               "TOTAL_ENERGY": {"Unit": "Wh", "Values": values(st.e_ac_out_wh)}}
        collection = args.choice("DataCollection", COLLECTIONS, {"DeviceClass": "Inverter", "Scope": "Device"},
                                 default="CumulationInverterData")
        arguments = {"DataCollection": collection, "DeviceClass": "Inverter", "Scope": "Device"}
        device = args.device_id(arguments, INVERTER_ID)
        arguments["DeviceId"] = device
        cfg = self.cfg
        va = abs(p_ac)
        energies = {"DAY_ENERGY": _vu(None, "Wh"), "YEAR_ENERGY": _vu(None, "Wh"),
                    "TOTAL_ENERGY": _vu(st.e_ac_out_wh, "Wh")}
        if collection == "CumulationInverterData":
            return arguments, {"PAC": _vu(p_ac, "W"), **energies, "DeviceStatus": status}
        if collection == "3PInverterData":
            i_ph = va / (3 * st.v_v)
            return arguments, {**{f"IAC_L{k}": _vu(i_ph, "A") for k in (1, 2, 3)},
                               **{f"UAC_L{k}": _vu(st.v_v, "V") for k in (1, 2, 3)}}
        string_w = st.pv_dc_w / cfg.pv_strings
        udc = cfg.pv_string_v if string_w > 0.5 else 0.0
        data: dict[str, Any] = {"PAC": _vu(p_ac, "W"), "SAC": _vu(va, "VA"), "IAC": _vu(va / st.v_v, "A"),
                                "UAC": _vu(st.v_v, "V"), "FAC": _vu(st.f_hz, "Hz"),
                                "IDC": _vu(string_w / udc if udc else 0.0, "A"), "UDC": _vu(udc, "V"),
                                **energies, "DeviceStatus": status}
        if cfg.pv_strings == 2:
            data["IDC_2"], data["UDC_2"] = data["IDC"], data["UDC"]
        return arguments, data

    def _controller(self, st: FroniusState) -> dict[str, Any]:
        vbat = battery_voltage(self.cfg, st.soc)
        cap = self.cfg.battery.capacity_wh
        return {"Controller": {"Capacity_Maximum": cap, "Current_DC": _num(st.batt_p_w / vbat),
                               "DesignedCapacity": cap,
                               "Details": {"Manufacturer": "Fronius", "Model": "Solar Battery (virtual)",
                                           "Serial": f"{self.serial}-B"},
                               "Enable": 1, "StateOfCharge_Relative": _num(st.soc * 100.0, 2),
                               "Status_BatteryCell": 3.0, "Temperature_Cell": 25.0,
                               "TimeStamp": int(self.clock()), "Voltage_DC": _num(vbat, 1)},
                "Modules": []}

    def _storage(self, st: FroniusState, args: _Args) -> tuple[dict[str, str], dict[str, Any]]:
        scope = args.choice("Scope", ("Device", "System"), {"DeviceClass": "Storage"})
        if scope == "System":
            return {"DeviceClass": "Storage", "Scope": "System"}, {STORAGE_ID: self._controller(st)}
        arguments = {"DeviceClass": "Storage", "Scope": "Device"}
        arguments["DeviceId"] = args.device_id(arguments, STORAGE_ID)
        return arguments, self._controller(st)

    def _meter_channels(self, st: FroniusState) -> dict[str, Any]:
        p, v, f = st.grid_p_w, st.v_v, st.f_hz
        p_ph = p / 3.0
        i_ph = p_ph / v  # a TS meter reports signed currents: + = consumption
        return {
            **{f"Current_AC_Phase_{k}": _num(i_ph) for k in (1, 2, 3)}, "Current_AC_Sum": _num(3 * i_ph),
            "Details": {"Manufacturer": "Fronius", "Model": "Smart Meter TS 65A-3", "Serial": f"{self.serial}-M"},
            "Enable": 1, "EnergyReactive_VArAC_Sum_Consumed": 0, "EnergyReactive_VArAC_Sum_Produced": 0,
            "EnergyReal_WAC_Minus_Absolute": _num(st.e_grid_export_wh, 0),
            "EnergyReal_WAC_Plus_Absolute": _num(st.e_grid_import_wh, 0),
            "EnergyReal_WAC_Sum_Consumed": _num(st.e_grid_import_wh, 0),
            "EnergyReal_WAC_Sum_Produced": _num(st.e_grid_export_wh, 0),
            "Frequency_Phase_Average": _num(f), "Meter_Location_Current": 0,
            **{f"PowerApparent_S_Phase_{k}": _num(abs(p_ph)) for k in (1, 2, 3)},
            "PowerApparent_S_Sum": _num(abs(p)),
            **{f"PowerFactor_Phase_{k}": 1 for k in (1, 2, 3)}, "PowerFactor_Sum": 1,
            **{f"PowerReactive_Q_Phase_{k}": 0 for k in (1, 2, 3)}, "PowerReactive_Q_Sum": 0,
            **{f"PowerReal_P_Phase_{k}": _num(p_ph) for k in (1, 2, 3)}, "PowerReal_P_Sum": _num(p),
            "TimeStamp": int(self.clock()), "Visible": 1,
            **{f"Voltage_AC_PhaseToPhase_{a}{b}": _num(v * math.sqrt(3), 1) for a, b in ((1, 2), (2, 3), (3, 1))},
            **{f"Voltage_AC_Phase_{k}": _num(v, 1) for k in (1, 2, 3)},
        }

    def _meter(self, st: FroniusState, args: _Args) -> tuple[dict[str, str], dict[str, Any]]:
        scope = args.choice("Scope", ("Device", "System"), {"DeviceClass": "Meter"})
        if scope == "System":
            return {"DeviceClass": "Meter", "Scope": "System"}, {METER_ID: self._meter_channels(st)}
        arguments = {"DeviceClass": "Meter", "Scope": "Device"}
        arguments["DeviceId"] = args.device_id(arguments, METER_ID)
        return arguments, self._meter_channels(st)


def _plain(text: str) -> bool:
    return len(text) <= MAX_ARGUMENT and text.isascii() and text.isprintable()


class _DeviceMissing(Exception):
    def __init__(self, message: str, arguments: dict[str, str]) -> None:
        super().__init__(message)
        self.arguments = arguments


class _Args:
    """CGI arguments; names are matched case-insensitively, as Fronius devices accept them."""

    def __init__(self, query: dict[str, str]) -> None:
        self.query = {k.lower(): v for k, v in query.items()}

    def choice(self, name: str, allowed: tuple[str, ...], arguments: dict[str, str], default: str | None = None) -> str:
        value = self.query.get(name.lower(), default)
        for option in allowed:
            if value is not None and value.lower() == option.lower():
                return option
        quoted = [f"'{a}'" for a in allowed]
        use = f"{', '.join(quoted[:-1])} or {quoted[-1]}" if len(quoted) > 1 else quoted[0]
        raise ArgumentError(f"CGI-Args: Invalid parameter '{value or ''}' for attribute '{name}' (use {use})",
                            {**arguments, **({name: value} if value is not None else {})})

    def device_id(self, arguments: dict[str, str], existing: str) -> str:
        value = self.query.get("deviceid")
        if value is None or not (value.isascii() and value.isdigit()):  # int() would take Arabic-Indic digits
            raise ArgumentError(f"CGI-Args: Invalid parameter '{value or ''}' for attribute 'DeviceId' "
                                "(use a numeric device id)", {**arguments, **({"DeviceId": value} if value else {})})
        if int(value) != int(existing):
            raise _DeviceMissing(f"Device with id {value} not available", {**arguments, "DeviceId": value})
        return existing


class FroniusSolarApiDevice(VirtualDevice):
    """The Fronius model behind the Solar API alone (``fronius+http://host:port``)."""

    scheme = "fronius+http"
    config_type = FroniusConfig

    def __init__(self, family: Family, config: BaseModel, *, device_id: str = "device",
                 context: DeviceContext | None = None) -> None:
        super().__init__(family, config, device_id=device_id, context=context)
        assert isinstance(config, FroniusConfig) and isinstance(self.bank, FroniusBank)
        self.server = SolarApiServer(self.bank, config, device_id)
        self._host = "127.0.0.1"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._host = host
        await self.server.start(host, port)
        return self.address

    async def stop(self) -> None:
        await self.server.stop()

    @property
    def address(self) -> str:
        return f"fronius+http://{self._host}:{self.server.port}"
