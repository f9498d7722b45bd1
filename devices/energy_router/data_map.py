"""Where each measurement and setpoint of the family lives in the ER's IEC 61850 data model, with its sign.

The device speaks the generator reference of IEC 61850-7-420 (AC power + = delivered to the grid, PV + = produced,
DC link + = exported to the neighbour); the battery is + when charging. Our names use the load arrow.
``ours = sign * scale * device``: the virtual device applies the inverse, the driver this, and both read this one
table, so they cannot drift apart. References are ``LN.DO.DA[.BDA]`` inside the logical device, with the FC.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Fcda:
    name: str  # our measurement or setpoint name
    ref: str  # LN.DO.DA... inside the LD
    fc: str
    sign: float = 1.0
    scale: float = 1.0  # ours = sign * scale * device value
    integer: bool = False

    def to_ours(self, device_value: float) -> float:
        return self.sign * self.scale * float(device_value)

    def to_device(self, ours: float) -> float:
        return self.sign * float(ours) / self.scale

    @property
    def item(self) -> str:
        """The MMS item id: ``MMXN1$MX$Watt$instMag$f``."""
        ln, *rest = self.ref.split(".")
        return "$".join([ln, self.fc, *rest])


GENERATOR = -1.0  # a device value in the generator reference is minus ours

MEASURED = (
    Fcda("p_w", "MMXN1.Watt.instMag.f", "MX", GENERATOR),
    Fcda("q_var", "MMXN1.VolAmpr.instMag.f", "MX", GENERATOR),
    Fcda("v_v", "MMXN1.Vol.instMag.f", "MX"),
    Fcda("f_hz", "MMXN1.Hz.instMag.f", "MX"),
    Fcda("pf", "MMXN1.PwrFact.instMag.f", "MX"),
    Fcda("pv_p_w", "MMDC1.Watt.instMag.f", "MX", GENERATOR),
    Fcda("batt_p_w", "MMDC4.Watt.instMag.f", "MX"),
    Fcda("soc", "ZBAT1.VolChgRte.instMag.f", "MX", scale=0.01),
    Fcda("dc_load_w", "MMDC2.Watt.instMag.f", "MX"),
    Fcda("v_dc_v", "MMDC2.Vol.instMag.f", "MX"),
    Fcda("link_p_w", "MMDC3.Watt.instMag.f", "MX", GENERATOR),
    Fcda("pv_curtail_w", "GGIO1.AnIn1.instMag.f", "MX"),
    Fcda("unserved_w", "GGIO1.AnIn2.instMag.f", "MX"),
    Fcda("v_dc_min_v", "GGIO1.AnIn3.instMag.f", "MX"),
    Fcda("v_dc_max_v", "GGIO1.AnIn4.instMag.f", "MX"),
    Fcda("ac_load_w", "GGIO1.AnIn5.instMag.f", "MX"),
    Fcda("loss_w", "GGIO1.AnIn6.instMag.f", "MX"),
    Fcda("e_wh", "GGIO1.AnIn7.instMag.f", "MX"),
    Fcda("e_unserved_wh", "GGIO1.AnIn8.instMag.f", "MX"),
    Fcda("p_charge_avail_w", "GGIO1.AnIn9.instMag.f", "MX"),
    Fcda("p_discharge_avail_w", "GGIO1.AnIn10.instMag.f", "MX"),
    Fcda("state", "ZINV1.GridModSt.stVal", "ST", integer=True),
    Fcda("mode", "DRCC1.DERStr.stVal", "ST", integer=True),
    Fcda("trips", "GGIO1.IntIn1.stVal", "ST", integer=True),
    Fcda("grid_present", "GGIO1.IntIn2.stVal", "ST", integer=True),
    Fcda("control", "GGIO1.IntIn3.stVal", "ST", integer=True),
    Fcda("mode_changes", "GGIO1.IntIn4.stVal", "ST", integer=True),
)

#: setpoint -> the FCDA the driver writes and reads back (``mode`` is the Operate of DRCC1.DERStr, see CONTROLS)
SETPOINTS = {
    "batt_p_w": Fcda("batt_p_w", "ZBTC1.BatChaPwr.setMag.f", "SP"),
    "p_w": Fcda("p_w", "DRCC1.OutWSet.setMag.f", "SP", GENERATOR),
    "q_var": Fcda("q_var", "DRCC1.OutVarSet.setMag.f", "SP", GENERATOR),
    "pf": Fcda("pf", "DRCC1.OutPFSet.setMag.f", "SP", GENERATOR),
    "pv_limit_w": Fcda("pv_limit_w", "MMDC1.Watt.subMag.f", "SV"),
    "link_p_w": Fcda("link_p_w", "DRCT1.LnkWSet.setMag.f", "SP", GENERATOR),
    "p_limit_w": Fcda("p_limit_w", "DRCT1.WMax.setMag.f", "SP"),
    "control": Fcda("control", "DRCC1.CtlMod.setVal", "SP", integer=True),
    "mode": Fcda("mode", "DRCC1.DERStr.stVal", "ST", integer=True),
}
#: further writable FCDAs the device accepts for a setpoint (the S4G controllers wrote Q here)
ALIASES = (Fcda("q_var", "MMXN1.VolAmpr.subMag.f", "SV", GENERATOR),)
#: controllable data objects: DO reference -> (setpoint, value that ctlVal maps to, or None for ctlVal itself)
CONTROLS = {"DRCC1.DERStr": ("mode", None), "DRCC1.DERStop": ("mode", 0.0)}

MEASURED_BY_NAME = {f.name: f for f in MEASURED}
