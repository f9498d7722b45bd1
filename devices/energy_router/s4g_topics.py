"""The S4G SenML topic names of the Energy Router's telemetry and commands, mapped to our names.

The S4G ER connector published each FCDA on its own topic, ``<prefix>/EnergyRouterInverter/MMXN1.Watt.instMag.f``
(the PV converter under ``EnergyRouterPV``), one SenML record per value, and took commands on
``.../DRCC1.DERStr.ctlNum`` (the mode number, see :mod:`devices.energy_router.model`),
``.../ZBTC1.BatChaPwr.setMag.f`` (battery power, W) and the substitution values ``MMDC1.Watt.subMag.f`` (PV power
reference, W) and ``MMXN1.VolAmpr.subMag.f`` (reactive power reference, var). Values on these topics are in the
device's convention (the same as over IEC 61850: :mod:`devices.energy_router.data_map`); :func:`to_ours` and
:func:`to_topic_value` convert. The family declares the measurement topics (``Family.topics``), so the world
publishes an ER's telemetry on its site's SMX broker under these names too.
"""

from __future__ import annotations

from dataclasses import dataclass

from devices.energy_router.data_map import ALIASES, MEASURED, SETPOINTS, Fcda

INVERTER, PV = "EnergyRouterInverter", "EnergyRouterPV"


@dataclass(frozen=True)
class Topic:
    name: str  # our measurement or setpoint name
    suffix: str  # topic after the site prefix, e.g. "EnergyRouterInverter/MMXN1.Watt.instMag.f"
    setpoint: bool
    fcda: Fcda
    in_s4g: bool  # True: a topic the S4G pilots used; False: ours, named the same way
    scale: float = 1.0  # topic value = scale * device value (the S4G SoC topic is in %, as the device)


def _topic(fcda: Fcda, setpoint: bool, in_s4g: bool = False, suffix: str | None = None) -> Topic:
    device = PV if fcda.ref.startswith("MMDC1.") else INVERTER
    return Topic(fcda.name, f"{device}/{suffix or fcda.ref}", setpoint, fcda, in_s4g)


_S4G_MEASURED = {"p_w", "q_var", "soc", "pv_p_w"}
_S4G_SET = {"batt_p_w", "pv_limit_w", "q_var:MMXN1.VolAmpr.subMag.f", "mode"}

TOPICS: tuple[Topic, ...] = (
    *(_topic(f, False, f.name in _S4G_MEASURED) for f in MEASURED),
    *(_topic(f, True, f.name in _S4G_SET) for name, f in SETPOINTS.items() if name != "mode"),
    *(_topic(f, True, f"{f.name}:{f.ref}" in _S4G_SET) for f in ALIASES),
    _topic(SETPOINTS["mode"], True, True, "DRCC1.DERStr.ctlNum"),
)

BY_SUFFIX = {t.suffix: t for t in TOPICS}
MEASUREMENT_TOPICS = {t.name: t.suffix for t in TOPICS if not t.setpoint}
SETPOINT_TOPICS = {t.name: t.suffix for t in TOPICS
                   if t.setpoint and t.suffix.split("/")[-1] != "MMXN1.VolAmpr.subMag.f"}


def measurement_topics() -> dict[str, tuple[str, float]]:
    """Our measurement name -> (topic suffix, factor: topic value = factor x ours), for ``Family.topics``."""
    return {name: (suffix, BY_SUFFIX[suffix].fcda.to_device(1.0)) for name, suffix in MEASUREMENT_TOPICS.items()}


def command_topics() -> dict[str, tuple[str, float]]:
    """Command topic suffix -> (our setpoint, factor: topic value = factor x ours), for ``Family.commands``:
    ``DRCC1.DERStr.ctlNum`` (mode), ``ZBTC1.BatChaPwr.setMag.f`` (batt_p_w), ``DRCC1.OutWSet.setMag.f`` (p_w),
    ``DRCC1.CtlMod.setVal`` (control), ``MMDC1.Watt.subMag.f`` (pv_limit_w), both Q references, ..."""
    return {t.suffix: (t.name, t.fcda.to_device(1.0)) for t in TOPICS if t.setpoint}


def to_ours(suffix: str, value: float) -> tuple[str, float]:
    """(our name, value in our convention) of a value received on a topic (KeyError: not an ER topic)."""
    topic = BY_SUFFIX[suffix]
    return topic.name, topic.fcda.to_ours(value)


def to_topic_value(name: str, ours: float, *, setpoint: bool = False) -> tuple[str, float]:
    """(topic suffix, value in the device's convention) to publish our ``name`` = ``ours``."""
    suffix = (SETPOINT_TOPICS if setpoint else MEASUREMENT_TOPICS)[name]
    return suffix, BY_SUFFIX[suffix].fcda.to_device(ours)
