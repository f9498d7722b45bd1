"""A virtual PV inverter behind SunSpec Modbus TCP (scheme ``sunspec+tcp``): the Fronius server and register map
without storage (models 1, 103, 120, 121, 122, 123, 160, 126, 132; see docs/devices/fronius.md)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from pydantic import BaseModel

from devices.family import DeviceContext, Family
from devices.fronius.model import FroniusState
from devices.fronius.modbus_server import ModbusTcpRegisterServer
from devices.fronius.sunspec_map import FroniusRegisterMap
from devices.fronius.virtual import FroniusSunSpecDevice, corrupt_frame, write_controls
from devices.pv.model import PvBank, PvConfig
from devices.virtual import VirtualDevice


def pv_state(bank: PvBank, i: int) -> FroniusState:
    """The served state of PV inverter ``i`` (no battery: its fields are zero)."""
    f: Callable[[np.ndarray], float] = lambda a: float(a[i])  # noqa: E731
    used = -f(bank.p_w)
    return FroniusState(
        t_s=bank.t_s, p_w=f(bank.p_w), q_var=f(bank.q_var), batt_p_w=0.0, pv_p_w=f(bank.p_w),
        pv_dc_w=used / f(bank.eta_inverter), pv_curtail_w=f(bank.pv_curtail_w), site_load_w=0.0, grid_p_w=0.0,
        soc=0.0, e_wh=0.0, p_charge_avail_w=0.0, p_discharge_avail_w=0.0, cha_st=1, stor_ctl_mod=0,
        in_w_rte_pct=100.0, out_w_rte_pct=100.0, rvrt_s=0, min_rsv_pct=0.0, cha_gri_set=0,
        e_ac_out_wh=f(bank.e_ac_out_wh), e_pv_wh=f(bank.e_pv_wh), e_batt_in_wh=0.0, e_batt_out_wh=0.0,
        e_grid_import_wh=0.0, e_grid_export_wh=0.0, v_v=f(bank.measure()["v_v"]), f_hz=f(bank.f_nom_hz),
        controls=bank.controls(i))


class PvSunSpecDevice(FroniusSunSpecDevice):
    config_type = PvConfig
    scheme = "sunspec+tcp"

    def __init__(self, family: Family, config: BaseModel, *, device_id: str = "device",
                 max_connections: int = 16, idle_timeout_s: float | None = 300.0,
                 context: DeviceContext | None = None) -> None:
        VirtualDevice.__init__(self, family, config, device_id=device_id, context=context)
        assert isinstance(config, PvConfig) and isinstance(self.bank, PvBank)  # checked by VirtualDevice
        self.cfg = config  # type: ignore[assignment]
        self.pbank: PvBank = self.bank
        self.map = FroniusRegisterMap(config, device_id)
        self.image: list[int] = self.map.registers(pv_state(self.pbank, 0))
        self.server = ModbusTcpRegisterServer(self, config.unit_id, max_connections=max_connections,
                                              idle_timeout_s=idle_timeout_s, corrupt=corrupt_frame)

    def sync(self) -> None:
        self.image = self.map.registers(pv_state(self.pbank, 0))

    def write(self, address: int, values: Sequence[int]) -> None:
        write_controls(self, self.pbank, address, values)
        self.sync()
