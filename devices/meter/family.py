"""The meter's family declaration (what the framework knows about it, docs/architecture.md).

A meter reads its connection point and injects nothing (``injects=False``): the world steps it after the power
flow, so it meters the solution of the step it is in. Its clock starts at the scenario start (the build
context) unless its config sets ``clock_start`` (a meter whose clock is off). It ``meters_point``: placed at a
site, it is the site's Unbundled Smart Meter.
"""

from __future__ import annotations

from devices.family import Family
from devices.meter.model import INPUTS, MEASUREMENTS, MeterBank, MeterConfig, capabilities

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
    inputs=INPUTS,  # the connection point's solution (point.*)
    injects=False,  # a meter reads its point; stepped after the power flow, no lag
    meters_point=True,  # at a site: the site's SMM (the SMX reads the PCC through it, KPIs from its registers)
    safe_setpoint={},
    drivers=DRIVERS,
    virtual=VIRTUAL,
    battery_setpoint=None,
    description=DESCRIPTION,
)
