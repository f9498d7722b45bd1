"""The meter's family declaration (what the framework knows about it, docs/architecture.md).

A meter reads its connection point and injects nothing (``injects=False``): the world steps it after the power
flow, so it meters the solution of the step it is in. Its clock starts at the scenario start (the build
context) unless its config sets ``clock_start`` (a meter whose clock is off).
"""

from __future__ import annotations

import math

from devices.family import Family, Input
from devices.meter.model import INPUTS, MEASUREMENTS, MeterBank, MeterConfig, capabilities

#: (attribute, source in the world's vocabulary, required, default)
CONTRACT_INPUTS: tuple[tuple[str, str, bool, float], ...] = (
    ("point_p_w", "point.p_w", True, 0.0),
    ("point_q_var", "point.q_var", True, 0.0),
    ("point_v_pu", "point.v_pu", True, 1.0),
    ("point_v_a_pu", "point.v_a_pu", False, math.nan),  # NaN: balanced, use point_v_pu
    ("point_v_b_pu", "point.v_b_pu", False, math.nan),
    ("point_v_c_pu", "point.v_c_pu", False, math.nan),
    ("point_p_a_w", "point.p_a_w", False, math.nan),  # NaN: split point_p_w equally over the phases
    ("point_p_b_w", "point.p_b_w", False, math.nan),
    ("point_p_c_w", "point.p_c_w", False, math.nan),
)
assert tuple(i[0] for i in CONTRACT_INPUTS) == INPUTS

DRIVERS = {"dlms+tcp": "devices.meter.driver:DlmsTcpDriver",
           "dlms+hdlc": "devices.meter.driver:DlmsHdlcDriver",
           "dlms+hdlc+tcp": "devices.meter.driver:DlmsHdlcDriver"}
VIRTUAL = {"dlms+tcp": "devices.meter.virtual:VirtualMeter",
           "dlms+hdlc+tcp": "devices.meter.virtual:VirtualMeterHdlc"}
DESCRIPTION = "Smart Metrology Meter (three- or single-phase) read over DLMS/COSEM: TCP wrapper or HDLC"

FAMILY = Family(
    name="meter",
    config=MeterConfig,
    bank=MeterBank,
    measurements=MEASUREMENTS,
    capabilities=capabilities,
    inputs=tuple(Input(name, source, required, default) for name, source, required, default in CONTRACT_INPUTS),
    injects=False,  # a meter reads its point; stepped after the power flow, no lag
    safe_setpoint={},
    drivers=DRIVERS,
    virtual=VIRTUAL,
    battery_setpoint=None,
    description=DESCRIPTION,
)
