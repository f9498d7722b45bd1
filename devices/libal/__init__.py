"""LiBal grid battery (Skive commercial pilot): LFP rack + BMS on CAN, PCS on Modbus RTU.

The scheme ``libal`` reaches a rig made of two links: the BMS broadcasts its state on a CAN bus (reached through
python-can, by default a socketcand server) and takes the EMS's charge/discharge enable requests there; the PCS
takes its power setpoint over Modbus RTU (serial, or RTU framing over TCP). ``libal://`` without a host starts the
virtual rig (both servers on loopback). See docs/devices/libal.md.
"""

from __future__ import annotations

from devices.base import Capabilities, Limit
from devices.family import Family
from devices.libal.model import LibalBank, LibalConfig

MEASUREMENTS = (
    "p_w", "q_var", "batt_p_w", "soc", "e_wh", "p_charge_avail_w", "p_discharge_avail_w",
    "v_v", "i_a", "t_c", "soh", "alarms", "i_charge_max_a", "i_discharge_max_a",
)


def _capabilities(cfg: LibalConfig) -> Capabilities:
    return Capabilities(
        measurements=MEASUREMENTS,
        setpoints={
            "p_w": Limit(-cfg.battery.p_discharge_max_w, cfg.battery.p_charge_max_w),
            "q_var": Limit(-cfg.s_max_va, cfg.s_max_va),
        },
    )


FAMILY = Family(
    name="libal",
    config=LibalConfig,
    bank=LibalBank,
    measurements=MEASUREMENTS,
    capabilities=_capabilities,
    injects=True,
    safe_setpoint={"p_w": 0.0, "q_var": 0.0},
    drivers={"libal": "devices.libal.driver:LibalDriver"},
    virtual={"libal": "devices.libal.virtual:LibalVirtualDevice"},
    battery_setpoint="p_w",
    description="LiBal grid battery: LFP rack with BMS (CAN, Pylontech/SMA frames) and PCS (Modbus RTU)",
)

__all__ = ["FAMILY", "LibalBank", "LibalConfig"]
