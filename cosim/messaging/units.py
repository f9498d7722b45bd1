"""SenML units: the IANA SenML Units registry (RFC 8428, RFC 8798), the Secondary Units registry (RFC 8798)
and the few S4G extension units, with conversion between units of the same quantity.

The S4G components exchanged W, kW, Wh, kWh, V, A, var, % (state of charge) and prices per kWh. Every one of
them except the prices is a registered SenML unit; the prices (``EUR/kWh``, ``EUR/MWh``, ``EUR``) and the
per-unit voltage ``pu`` are our extensions and are documented as such in docs/messaging.md.
"""

from __future__ import annotations

# RFC 8428 §12.1 (SenML Units registry) and the later additions of RFC 8798 §3 and ISO 7027-1 (NTU).
PRIMARY_UNITS: frozenset[str] = frozenset("""
m kg g s A K cd mol Hz rad sr N Pa J W C V F Ohm S Wb T H Cel lm lx Bq Gy Sv kat m2 m3 l m/s m/s2 m3/s l/s
W/m2 cd/m2 bit bit/s lat lon pH dB dBW Bspl count / % %RH %EL EL 1/s 1/min beat/min beats S/m
B VA VAs var vars J/m kg/m3 deg NTU
""".split())

# RFC 8798 §4 Secondary Units registry (and its first registrations).
SECONDARY_UNITS: frozenset[str] = frozenset("""
ms min h MHz kW kVA kvar Ah Wh kWh varh kvarh kVAh Wh/km KiB GB Mbit/s B/s MB/s mV mA dBm ug/m3 mm/h m/h ppm
/100 /1000 hPa mm cm km km/h ppb ppt VAh mg/l ug/l g/l
""".split())

# Not registered with IANA; used by the S4G components (prices) and by our voltage controller (per unit).
S4G_UNITS: frozenset[str] = frozenset({"EUR", "EUR/kWh", "EUR/MWh", "pu"})

KNOWN_UNITS: frozenset[str] = PRIMARY_UNITS | SECONDARY_UNITS | S4G_UNITS

# unit -> (quantity, scale to the quantity's base unit, offset): base = value * scale + offset
_CONVERSIONS: dict[str, tuple[str, float, float]] = {
    "W": ("power", 1.0, 0.0), "kW": ("power", 1e3, 0.0),
    "var": ("reactive_power", 1.0, 0.0), "kvar": ("reactive_power", 1e3, 0.0),
    "VA": ("apparent_power", 1.0, 0.0), "kVA": ("apparent_power", 1e3, 0.0),
    "J": ("energy", 1.0, 0.0), "Wh": ("energy", 3600.0, 0.0), "kWh": ("energy", 3.6e6, 0.0),
    "vars": ("reactive_energy", 1.0, 0.0), "varh": ("reactive_energy", 3600.0, 0.0),
    "kvarh": ("reactive_energy", 3.6e6, 0.0),
    "VAs": ("apparent_energy", 1.0, 0.0), "VAh": ("apparent_energy", 3600.0, 0.0),
    "kVAh": ("apparent_energy", 3.6e6, 0.0),
    "V": ("voltage", 1.0, 0.0), "mV": ("voltage", 1e-3, 0.0),
    "A": ("current", 1.0, 0.0), "mA": ("current", 1e-3, 0.0),
    "C": ("charge", 1.0, 0.0), "Ah": ("charge", 3600.0, 0.0),
    "s": ("time", 1.0, 0.0), "ms": ("time", 1e-3, 0.0), "min": ("time", 60.0, 0.0), "h": ("time", 3600.0, 0.0),
    "/": ("ratio", 1.0, 0.0), "%": ("ratio", 0.01, 0.0), "/100": ("ratio", 0.01, 0.0),
    "/1000": ("ratio", 1e-3, 0.0), "ppm": ("ratio", 1e-6, 0.0),
    "K": ("temperature", 1.0, 0.0), "Cel": ("temperature", 1.0, 273.15),
    "Hz": ("frequency", 1.0, 0.0), "MHz": ("frequency", 1e6, 0.0),
    "EUR/kWh": ("price", 1.0, 0.0), "EUR/MWh": ("price", 1e-3, 0.0),
    "m": ("length", 1.0, 0.0), "mm": ("length", 1e-3, 0.0), "cm": ("length", 1e-2, 0.0), "km": ("length", 1e3, 0.0),
    "Pa": ("pressure", 1.0, 0.0), "hPa": ("pressure", 100.0, 0.0),
}


def is_known(unit: str) -> bool:
    """True for a unit of the SenML registries or the S4G extensions."""
    return unit in KNOWN_UNITS


def convert(value: float, from_unit: str, to_unit: str) -> float:
    """Convert ``value`` between two units of the same quantity (``convert(1.5, "kW", "W") == 1500.0``).

    Raises ValueError when either unit is not convertible or the quantities differ (W to Wh, for instance).
    """
    if from_unit == to_unit:
        return value
    try:
        q1, s1, o1 = _CONVERSIONS[from_unit]
        q2, s2, o2 = _CONVERSIONS[to_unit]
    except KeyError as exc:
        raise ValueError(f"no conversion known for unit {exc.args[0]!r}") from None
    if q1 != q2:
        raise ValueError(f"cannot convert {from_unit!r} ({q1}) to {to_unit!r} ({q2})")
    return ((value * s1 + o1) - o2) / s2
