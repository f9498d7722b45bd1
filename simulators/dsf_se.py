"""The S4G DSF-SE grid format: the JSON the original simulation engine turned into OpenDSS commands.

:func:`load_dsf_se` validates the whole file first (every problem a :class:`GridLoadError` with its key
path), then builds the pandapower net in bulk. Sequence data follow OpenDSS: line codes' phase matrices are
averaged to positive and zero sequence (transposed lines), the source impedance comes from MVAsc3/MVAsc1 with
OpenDSS's default X/R ratios, and transformers keep their connection (delta-wye is Dyn).
"""

from __future__ import annotations

import json
import math
import os
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandapower as pp

from simulators.grid_model import PHASE_LETTERS, GridLoadError, GridModel, model_from_net
from simulators.three_phase_data import TRANSFORMER_MAG0_PERCENT

# OpenDSS Vsource defaults: the DSF-SE format was fed to OpenDSS, which assumes these ratios when only MVAsc is given.
_OPENDSS_X1R1 = 4.0
_OPENDSS_X0R0 = 3.0
_LENGTH_UNIT_KM = {"km": 1.0, "m": 1e-3, "kft": 0.3048, "ft": 0.3048e-3, "mi": 1.609344, "none": 1.0}


class _Reader:
    """Typed access to the parsed JSON that turns every problem into a GridLoadError with a key path."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key_path: str, expected: str, found: object) -> GridLoadError:
        return GridLoadError(self.path, key_path, expected, found)

    def get(self, obj: Mapping[str, Any], key: str, where: str, default: Any = ...) -> Any:
        if key in obj:
            return obj[key]
        if default is not ...:
            return default
        raise self.fail(f"{where}.{key}" if where else key, f"key '{key}'", "it missing")

    def number(self, obj: Mapping[str, Any], key: str, where: str, default: Any = ..., positive: bool = False) -> float:
        value = self.get(obj, key, where, default)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or (positive and value <= 0):
            raise self.fail(f"{where}.{key}", "a positive number" if positive else "a number", repr(value))
        return float(value)

    def text(self, obj: Mapping[str, Any], key: str, where: str) -> str:
        value = self.get(obj, key, where)
        if not isinstance(value, str) or not value:
            raise self.fail(f"{where}.{key}", "a non-empty string", repr(value))
        return value

    def items(self, obj: Mapping[str, Any], key: str, where: str, required: bool = True) -> list[dict[str, Any]]:
        value = self.get(obj, key, where, ... if required else [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.fail(f"{where}.{key}" if where else key, "a list of objects", _describe(value))
        return value


def _describe(value: object) -> str:
    return f"{type(value).__name__} {value!r}"[:80]


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise GridLoadError(path, "", "an existing DSF-SE JSON file", "no such file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise GridLoadError(path, "", "a readable UTF-8 file", f"{type(exc).__name__}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise GridLoadError(path, f"line {exc.lineno} column {exc.colno}", "valid JSON", exc.msg) from exc
    if not isinstance(data, dict):
        raise GridLoadError(path, "", "a JSON object with 'common' and 'radials'", _describe(data))
    return data


def _split_bus(ref: str) -> tuple[str, list[int]]:
    """'node_a11.1' -> ('node_a11', [1]); OpenDSS notation, phase numbers 1..3 (0 = neutral is dropped)."""
    node, *parts = ref.split(".")
    return node, [int(p) for p in parts if p.isdigit() and int(p) != 0]


@dataclass
class _LineCode:
    r1: float
    x1: float
    r0: float
    x0: float
    c1_nf: float
    c0_nf: float
    max_i_ka: float
    unit_km: float


def _sequence_from_matrix(rows: object, r: _Reader, where: str) -> tuple[float, float]:
    """(positive, zero) sequence value of a symmetric 3x3 phase matrix given OpenDSS-style as a lower triangle."""
    if not isinstance(rows, list) or not rows:
        raise r.fail(where, "a lower-triangular matrix [[a],[b,c],...]", _describe(rows))
    n = len(rows)
    m = np.zeros((n, n))
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) not in (i + 1, n) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in row
        ):
            raise r.fail(f"{where}[{i}]", f"a row of {i + 1} numbers", _describe(row))
        for j in range(i + 1):
            m[i, j] = m[j, i] = float(row[j])
    self_ = float(np.mean(np.diag(m)))
    mutual = float(np.mean(m[~np.eye(n, dtype=bool)])) if n > 1 else 0.0
    # averaging over the phases is the usual transposed-line assumption behind pandapower's sequence data
    return self_ - mutual, self_ + 2.0 * mutual


def _read_linecodes(radial: dict[str, Any], where: str, r: _Reader,
                    ampacity_a: Mapping[str, float]) -> dict[str, _LineCode]:
    codes: dict[str, _LineCode] = {}
    for k, lc in enumerate(r.items(radial, "linecode", where, required=False)):
        w = f"{where}.linecode[{k}]"
        name = r.text(lc, "id", w)
        r1, r0 = _sequence_from_matrix(r.get(lc, "rmatrix", w), r, f"{w}.rmatrix")
        x1, x0 = _sequence_from_matrix(r.get(lc, "xmatrix", w), r, f"{w}.xmatrix")
        c1 = c0 = 0.0
        if "cmatrix" in lc:
            c1, c0 = _sequence_from_matrix(lc["cmatrix"], r, f"{w}.cmatrix")
        unit = str(lc.get("units", "km")).lower()
        if unit not in _LENGTH_UNIT_KM:
            raise r.fail(f"{w}.units", f"one of {sorted(_LENGTH_UNIT_KM)}", repr(unit))
        amps = ampacity_a.get(name, lc.get("normamps", math.nan))
        codes[name] = _LineCode(r1, x1, r0, x0, c1, c0, float(amps) / 1000.0, _LENGTH_UNIT_KM[unit])
    return codes


@dataclass
class _Parsed:
    """Everything read from a DSF-SE file, validated, before any pandapower element exists (built in bulk)."""

    bus_kv: dict[str, float] = field(default_factory=dict)  # insertion order = bus order; NaN = not yet known
    trafos: list[dict[str, Any]] = field(default_factory=list)
    lines: list[dict[str, Any]] = field(default_factory=list)
    loads: list[tuple[str, str, int | None, float, float]] = field(default_factory=list)  # name, node, phase, MW, Mvar
    ders: list[dict[str, Any]] = field(default_factory=list)

    def bus(self, name: str) -> str:
        self.bus_kv.setdefault(name, math.nan)
        return name


def load_dsf_se(
    path: str | os.PathLike[str], *, ampacity_a: Mapping[str, float] | None = None
) -> GridModel:
    """Load an S4G DSF-SE grid (the JSON the original simulation engine turned into OpenDSS commands).

    ``ampacity_a`` maps a line code id to its rated current in A; the format itself carries ratings only as the
    optional OpenDSS ``normamps``, and lines without a rating get ``max_i_ka = NaN`` (loading reported as NaN).
    """
    p = Path(path)
    r = _Reader(p)
    data = _read_json(p)
    common = r.get(data, "common", "")
    if not isinstance(common, dict):
        raise r.fail("common", "an object", _describe(common))
    radials = r.items(data, "radials", "")
    if not radials:
        raise r.fail("radials", "at least one radial", "an empty list")
    parsed = _Parsed()
    source = parsed.bus(r.text(common, "bus1", "common"))
    parsed.bus_kv[source] = r.number(common, "base_kV", "common", positive=True)
    eg_kwargs = _source_kwargs(common, parsed.bus_kv[source], r)
    for ri, radial in enumerate(radials):
        _parse_radial(radial, f"radials[{ri}]", r, parsed, ampacity_a or {})
    _assign_voltage_levels(parsed, p)

    net = pp.create_empty_network(name=str(common.get("id", p.stem)),
                                  f_hz=r.number(common, "base_frequency", "common", 50.0, positive=True))
    names = list(parsed.bus_kv)
    created = pp.create_buses(net, len(names), vn_kv=list(parsed.bus_kv.values()), name=names)
    idx = dict(zip(names, (int(i) for i in created), strict=True))
    pp.create_ext_grid(net, idx[source], **eg_kwargs)
    for tr in parsed.trafos:
        pp.create_transformer_from_parameters(net, idx[tr.pop("hv")], idx[tr.pop("lv")], **tr)
    if parsed.lines:
        cols = {k: [line[k] for line in parsed.lines] for k in parsed.lines[0]}
        pp.create_lines_from_parameters(net, [idx[b] for b in cols.pop("from")], [idx[b] for b in cols.pop("to")],
                                        **cols)
    phase_of_asym: dict[int, int | None] = {}
    for name, node, phase, p_mw, q_mvar in parsed.loads:
        if phase is None:
            pp.create_load(net, idx[node], p_mw=p_mw, q_mvar=q_mvar, name=name)
            continue
        letter = PHASE_LETTERS[phase - 1]
        k = int(pp.create_asymmetric_load(net, idx[node], name=name,
                                          **{f"p_{letter}_mw": p_mw, f"q_{letter}_mvar": q_mvar}))
        phase_of_asym[k] = phase
    model = model_from_net(net, source="dsf-se", phase_of_asym=phase_of_asym, ders=parsed.ders)
    if net.line.max_i_ka.isna().any():
        model.assumptions.append("lines without a rating (normamps / ampacity_a) have max_i_ka = NaN")
    return model


def _parse_radial(radial: dict[str, Any], where: str, r: _Reader, parsed: _Parsed,
                  ampacity_a: Mapping[str, float]) -> None:
    codes = _read_linecodes(radial, where, r, ampacity_a)
    for ti, tr in enumerate(r.items(radial, "transformer", where, required=False)):
        parsed.trafos.append(_transformer_kwargs(tr, f"{where}.transformer[{ti}]", r, parsed))
    for li, line in enumerate(r.items(radial, "powerLines", where)):
        w = f"{where}.powerLines[{li}]"
        spec = _line_kwargs(line, _match_linecode(line, codes, w, r), w, r)
        spec["from"] = parsed.bus(_split_bus(r.text(line, "bus1", w))[0])
        spec["to"] = parsed.bus(_split_bus(r.text(line, "bus2", w))[0])
        parsed.lines.append(spec)
    for ki, load in enumerate(r.items(radial, "loads", where, required=False)):
        parsed.loads.append(_parse_load(load, f"{where}.loads[{ki}]", r, parsed))
    for kind, key in (("pv", "photovoltaics"), ("storage", "storageUnits")):
        for di, der in enumerate(r.items(radial, key, where, required=False)):
            w = f"{where}.{key}[{di}]"
            node = _split_bus(r.text(der, "bus1", w))[0]
            if node not in parsed.bus_kv:
                raise r.fail(f"{w}.bus1", "a bus defined by a line or transformer", repr(node))
            parsed.ders.append({"kind": kind, "id": r.text(der, "id", w), "bus": node, "data": dict(der)})


def _source_kwargs(common: dict[str, Any], kv: float, r: _Reader) -> dict[str, Any]:
    """Slack with the OpenDSS Vsource impedances implied by MVAsc3 / MVAsc1 (X1/R1 = 4, X0/R0 = 3)."""
    s3 = r.number(common, "MVAsc3", "common", positive=True)
    s1 = r.number(common, "MVAsc1", "common", s3, positive=True)
    z1 = kv**2 / s3
    z0 = max(3.0 * kv**2 / s1 - 2.0 * z1, 1e-9 * z1)  # single-phase fault current: 3V / (2 Z1 + Z0)
    x1 = z1 / math.hypot(1.0, 1.0 / _OPENDSS_X1R1)
    x0 = z0 / math.hypot(1.0, 1.0 / _OPENDSS_X0R0)
    return dict(
        vm_pu=r.number(common, "per_unit", "common", 1.0, positive=True),
        va_degree=r.number(common, "angle", "common", 0.0),
        name=str(common.get("id", "source")),
        s_sc_max_mva=s3, s_sc_min_mva=s3,
        rx_max=1.0 / _OPENDSS_X1R1, rx_min=1.0 / _OPENDSS_X1R1,
        x0x_max=x0 / x1, x0x_min=x0 / x1,
        r0x0_max=1.0 / _OPENDSS_X0R0, r0x0_min=1.0 / _OPENDSS_X0R0,
    )


def _transformer_kwargs(tr: dict[str, Any], w: str, r: _Reader, parsed: _Parsed) -> dict[str, Any]:
    name = r.text(tr, "id", w)
    buses, kvs, kvas = r.get(tr, "buses", w), r.get(tr, "kvs", w), r.get(tr, "kvas", w)
    for key, value in (("buses", buses), ("kvs", kvs), ("kvas", kvas)):
        if not isinstance(value, list) or len(value) != 2:
            raise r.fail(f"{w}.{key}", "a list of 2 entries (two-winding transformer)", _describe(value))
    for key, value in (("kvs", kvs), ("kvas", kvas)):
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in value):
            raise r.fail(f"{w}.{key}", "two positive numbers", _describe(value))
    if int(r.number(tr, "windings", w, 2)) != 2:
        raise r.fail(f"{w}.windings", "2", tr.get("windings"))
    conns = tr.get("conns", ["delta", "wye"])
    if not isinstance(conns, list) or len(conns) != 2:
        raise r.fail(f"{w}.conns", "a list of 2 connections", _describe(conns))
    hv_delta, lv_delta = (str(c).lower().startswith("d") for c in conns)
    vector_group = {(True, False): "Dyn", (False, False): "YNyn", (False, True): "YNd"}.get((hv_delta, lv_delta))
    if vector_group is None:
        raise r.fail(f"{w}.conns", "[delta, wye], [wye, wye] or [wye, delta]", conns)
    xsc = tr.get("xsc_array", [7.0])
    if not isinstance(xsc, list) or not xsc or not isinstance(xsc[0], (int, float)):
        raise r.fail(f"{w}.xsc_array", "a list with the HV-LV reactance in %", _describe(xsc))
    rs = tr.get("percent_rs")
    if "percent_load_loss" in tr:
        r_pct = r.number(tr, "percent_load_loss", w)  # OpenDSS: %loadloss = sum of the winding %R
    elif isinstance(rs, list) and len(rs) == 2:
        r_pct = float(rs[0]) + float(rs[1])
    else:
        r_pct = 0.0
    hv, lv = (parsed.bus(_split_bus(str(b))[0]) for b in buses)
    parsed.bus_kv[hv], parsed.bus_kv[lv] = float(kvs[0]), float(kvs[1])
    taps = tr.get("taps", [1, 1])
    ratio = float(taps[0]) / float(taps[1]) if isinstance(taps, list) and len(taps) == 2 else 1.0
    vk = math.hypot(float(xsc[0]), r_pct)
    return dict(
        hv=hv, lv=lv, sn_mva=float(kvas[0]) / 1000.0, vn_hv_kv=float(kvs[0]) * ratio, vn_lv_kv=float(kvs[1]),
        vkr_percent=r_pct, vk_percent=vk, pfe_kw=0.0, i0_percent=0.0,
        # OpenDSS delta-wye is ANSI: LV lags HV by 30 deg (Dyn1); only angles depend on it, not magnitudes
        shift_degree={"Dyn": 30.0, "YNd": 330.0}.get(vector_group, 0.0), vector_group=vector_group,
        vk0_percent=vk, vkr0_percent=r_pct, mag0_percent=TRANSFORMER_MAG0_PERCENT, mag0_rx=0.0, si0_hv_partial=0.9,
        name=name,
    )


def _match_linecode(line: dict[str, Any], codes: dict[str, _LineCode], w: str, r: _Reader) -> _LineCode | None:
    """The line code a line uses: named by 'linecode', or the code whose positive sequence equals the line's r1/x1."""
    if "linecode" in line:
        name = line["linecode"]
        if name not in codes:
            raise r.fail(f"{w}.linecode", f"one of {sorted(codes)}", repr(name))
        return codes[name]
    if "r1" not in line:
        raise r.fail(w, "either 'linecode' or 'r1'/'x1'", "neither")
    r1, x1 = r.number(line, "r1", w), r.number(line, "x1", w, 0.0)
    for code in codes.values():
        if math.isclose(code.r1, r1, rel_tol=1e-6) and math.isclose(code.x1, x1, rel_tol=1e-6, abs_tol=1e-12):
            return code
    return None


def _line_kwargs(line: dict[str, Any], code: _LineCode | None, w: str, r: _Reader) -> dict[str, Any]:
    unit = str(line.get("unitlength", line.get("units", "km"))).lower()
    if unit not in _LENGTH_UNIT_KM:
        raise r.fail(f"{w}.unitlength", f"one of {sorted(_LENGTH_UNIT_KM)}", repr(unit))
    per_km = 1.0 / _LENGTH_UNIT_KM[unit]  # line impedances are per line unit
    if code is not None and "r1" not in line:
        r1, x1, c1 = (v / code.unit_km for v in (code.r1, code.x1, code.c1_nf))
    else:
        r1, x1, c1 = (r.number(line, k, w, 0.0 if k != "r1" else ...) * per_km for k in ("r1", "x1", "c1"))
    if code is not None:
        # the code's zero sequence scaled like its positive sequence (codes matched by r1 share the unit)
        scale = r1 / code.r1 if code.r1 else 1.0 / code.unit_km
        r0, x0, c0 = code.r0 * scale, code.x0 * scale, code.c0_nf * scale
    else:
        r0, x0, c0 = r1, x1, c1  # no coupling data: phases uncoupled, like the format's diagonal line codes
    max_i_ka = code.max_i_ka if code is not None else math.nan
    if "normamps" in line:
        max_i_ka = r.number(line, "normamps", w, positive=True) / 1000.0
    return {
        "name": r.text(line, "id", w),
        "length_km": r.number(line, "length", w, positive=True) * _LENGTH_UNIT_KM[unit],
        "r_ohm_per_km": r1, "x_ohm_per_km": x1, "c_nf_per_km": c1, "max_i_ka": max_i_ka,
        # explicit zero-sequence values on the line win over the code's
        "r0_ohm_per_km": r.number(line, "r0", w, r0 / per_km) * per_km,
        "x0_ohm_per_km": r.number(line, "x0", w, x0 / per_km) * per_km,
        "c0_nf_per_km": r.number(line, "c0", w, c0 / per_km) * per_km,
    }


def _parse_load(load: dict[str, Any], w: str, r: _Reader, parsed: _Parsed) -> tuple[str, str, int | None, float,
                                                                                     float]:
    name = r.text(load, "id", w)
    node, phases = _split_bus(r.text(load, "bus", w))
    if node not in parsed.bus_kv:
        raise r.fail(f"{w}.bus", "a bus defined by a line or transformer", repr(node))
    n_phases = int(r.number(load, "phases", w, 3))
    if str(load.get("connection_type", "wye")).lower() != "wye":
        raise r.fail(f"{w}.connection_type", "'wye' (delta loads are not supported)", load.get("connection_type"))
    p_kw = r.number(load, "kW", w)
    if "kVar" in load:
        q_kvar = r.number(load, "kVar", w)
    else:
        pf = r.number(load, "powerfactor", w, 1.0)
        if not 0.0 < abs(pf) <= 1.0:
            raise r.fail(f"{w}.powerfactor", "a number in (0, 1]", pf)
        q_kvar = math.copysign(abs(p_kw) * math.tan(math.acos(abs(pf))), pf)
    if n_phases == 3:
        return name, node, None, p_kw / 1000.0, q_kvar / 1000.0
    if n_phases != 1:
        raise r.fail(f"{w}.phases", "1 or 3", n_phases)
    phase = phases[0] if phases else 1  # OpenDSS: a bus without node numbers means node 1
    if phase not in (1, 2, 3):
        raise r.fail(f"{w}.bus", "phase 1, 2 or 3 after the node name", load["bus"])
    return name, node, phase, p_kw / 1000.0, q_kvar / 1000.0


def _assign_voltage_levels(parsed: _Parsed, path: Path) -> None:
    """Buses only named by lines inherit the nominal voltage of the bus they connect to (lines never change kV)."""
    adjacency: dict[str, list[str]] = {}
    for line in parsed.lines:
        adjacency.setdefault(line["from"], []).append(line["to"])
        adjacency.setdefault(line["to"], []).append(line["from"])
    queue: deque[str] = deque(b for b, kv in parsed.bus_kv.items() if not math.isnan(kv))
    while queue:
        b = queue.popleft()
        for nb in adjacency.get(b, []):
            if math.isnan(parsed.bus_kv[nb]):
                parsed.bus_kv[nb] = parsed.bus_kv[b]
                queue.append(nb)
    orphans = [b for b, kv in parsed.bus_kv.items() if math.isnan(kv)]
    if orphans:
        raise GridLoadError(path, "radials[*].powerLines", "every bus connected to the source or a transformer",
                            f"isolated bus(es) {orphans[:5]}")
