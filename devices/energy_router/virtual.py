"""A virtual Energy Router behind IEC 61850 MMS, scheme ``iec61850``: the model, the ICD data model, the server.

After every step (:meth:`sync`) the measurements are written into the data model in the device's sign
convention (:mod:`devices.energy_router.data_map`); a client's SetDataValues on a setpoint FCDA is checked
against the family's limits (outside: ``object-value-invalid``, nothing changes), answered at once so it can be
read back, and applied by the model at its next step. ``DRCC1.DERStr`` (INC) is operated with the mode as
``ctlVal`` (direct control with normal security), ``DRCC1.DERStop`` (SPC) with ``true`` stops the ER (mode 0).
Every other attribute is read-only (``object-access-denied``).

Fault injection for tests and bench drills: :meth:`set_silent` (the association stays open, nothing is
answered) and :meth:`corrupt_next_reply` (the next MMS response has a broken BER length).
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from devices.base import Setpoint, SetpointRejected
from devices.energy_router import data_map
from devices.energy_router.mms import OBJECT_ACCESS_DENIED, OBJECT_VALUE_INVALID, Identity, MmsServer
from devices.energy_router.mms_server import MmsTcpServer
from devices.energy_router.model import INTEGER_SETPOINTS, EnergyRouterBank, EnergyRouterConfig
from devices.energy_router.scl_model import DataModel, Node
from devices.family import DeviceContext, Family
from devices.virtual import VirtualDevice

ICD = Path(__file__).with_name("energy_router.icd")
ICD_IED, ICD_LD = "ER", "LD0"


def load_model(config: EnergyRouterConfig) -> DataModel:
    """The ICD's data model, with the IED and LD names the configuration gives."""
    model = DataModel.from_scl(ICD, ICD_IED)
    model.rename_domain(ICD_IED + ICD_LD, config.ld_name)
    model.ied_name = config.ied_name
    return model


class VirtualEnergyRouter(VirtualDevice):
    config_type = EnergyRouterConfig
    scheme = "iec61850"

    def __init__(self, family: Family, config: BaseModel, *, device_id: str = "device",
                 context: DeviceContext | None = None) -> None:
        super().__init__(family, config, device_id=device_id, context=context)
        assert isinstance(config, EnergyRouterConfig) and isinstance(self.bank, EnergyRouterBank)
        self.cfg: EnergyRouterConfig = config
        self.erbank: EnergyRouterBank = self.bank
        self.capabilities = family.capabilities(config)
        self.serial = config.serial or f"ER{zlib.crc32(self.device_id.encode()) % 100_000_000:08d}"
        self.data = load_model(config)
        self.ld = config.ld_name
        self._setpoints = {f.item: f for f in (*data_map.SETPOINTS.values(), *data_map.ALIASES) if f.fc != "ST"}
        self._controls = {f"{do.split('.')[0]}$CO${do.split('.')[1]}$Oper": (do, *target)
                          for do, target in data_map.CONTROLS.items()}
        self.server = MmsTcpServer(MmsServer(self.data, self._on_write, Identity("s4g-hil", "EnergyRouter", "1")))
        self.server.mms.reports.clock = lambda: self.context.at(self.t_s).timestamp()  # the device clock
        self._host = "127.0.0.1"
        self._static()
        self.sync()

    # -- VirtualDevice -----------------------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._host = host
        await self.server.start(host, port)
        return self.address

    async def stop(self) -> None:
        await self.server.stop()

    @property
    def address(self) -> str:
        return f"iec61850://{self._host}:{self.server.port or 0}/{self.ld}"

    @property
    def port(self) -> int:
        return self.server.port or 0

    def set_silent(self, silent: bool) -> None:
        self.server.silent = silent

    def corrupt_next_reply(self) -> None:
        self.server.corrupt_next = True

    def open_connections(self) -> int:
        return self.server.open_connections()

    # -- the served values ---------------------------------------------------------------------------------
    def _set(self, ref: str, value: Any) -> None:
        self.data.set(f"{self.cfg.ld_inst}/{ref}", value)

    def _static(self) -> None:
        c = self.cfg
        for ref, value in (("LLN0.Mod.stVal[ST]", 1), ("LLN0.Beh.stVal[ST]", 1), ("LLN0.Health.stVal[ST]", 1),
                           ("LLN0.NamPlt.vendor[DC]", "s4g-hil"), ("LLN0.NamPlt.swRev[DC]", "1"),
                           ("LLN0.NamPlt.d[DC]", "Virtual S4G Energy Router"), ("LPHD1.PhyNam.vendor[DC]", "s4g-hil"),
                           ("LPHD1.PhyNam.model[DC]", f"ER-{c.phases}ph"), ("LPHD1.PhyNam.serNum[DC]", self.serial),
                           ("LPHD1.PhyHealth.stVal[ST]", 1), ("ZINV1.WRtg.setMag.f[SP]", c.inv_p_max_w),
                           ("ZINV1.VarRtg.setMag.f[SP]", c.inv_s_max_va), ("ZINV1.PhsNum.stVal[ST]", c.phases),
                           ("DRCC1.DERStr.ctlModel[CF]", 1), ("DRCC1.DERStop.ctlModel[CF]", 1),
                           ("LLN0.Mod.ctlModel[CF]", 0)):
            self._set(ref, value)

    def sync(self) -> None:
        """Measurements and the held setpoints into the data model (device convention), stamped with the device
        clock (the build context's start + the model's time: the scenario's calendar, or now stand-alone)."""
        m = {k: float(v[0]) for k, v in self.erbank.measure().items()}
        now = self.context.at(self.t_s).timestamp()
        for f in data_map.MEASURED:
            value = f.to_device(m[f.name])
            self._set(f"{f.ref}[{f.fc}]", int(round(value)) if f.integer else value)
            do = f.ref.rsplit(".", 2)[0] if f.fc == "MX" else f.ref.rsplit(".", 1)[0]
            self._set(f"{do}.t[{f.fc}]", now)
        for f in data_map.MEASURED:  # MV.mag follows instMag (no deadband)
            if f.ref.endswith(".instMag.f"):
                self._set(f"{f.ref.replace('.instMag.', '.mag.')}[MX]", f.to_device(m[f.name]))
        self._render_phases(m)
        self._render_dc(m)
        self._set("ZBAT1.BatSt.stVal[ST]", m["state"] > 0)
        self._set("LPHD1.Proxy.stVal[ST]", False)
        for name, held in self.erbank.held_setpoints(0).items():
            f = data_map.SETPOINTS[name]
            if f.fc == "ST":
                continue
            self._set(f"{f.ref}[{f.fc}]", int(held) if f.integer else f.to_device(held))
        for f in data_map.ALIASES:
            self._set(f"{f.ref}[{f.fc}]", f.to_device(self.erbank.held_setpoints(0)[f.name]))
        self.server.mms.reports.scan()  # data-change reports to the clients that enabled them

    def _render_phases(self, m: dict[str, float]) -> None:
        phases = self.cfg.phases
        share = [1.0 / phases if k < phases else 0.0 for k in range(3)]
        v = m["v_v"]
        self._set("MMXU1.TotW.instMag.f[MX]", -m["p_w"])
        self._set("MMXU1.TotVAr.instMag.f[MX]", -m["q_var"])
        self._set("MMXU1.TotPF.instMag.f[MX]", m["pf"])
        self._set("MMXU1.Hz.instMag.f[MX]", m["f_hz"])
        self._set("MMXN1.Amp.instMag.f[MX]", abs(m["p_w"]) / v if v > 1 else 0.0)
        for k, phs in enumerate(("phsA", "phsB", "phsC")):
            p = -m["p_w"] * share[k]
            self._set(f"MMXU1.PhV.{phs}.cVal.mag.f[MX]", v if share[k] else 0.0)
            self._set(f"MMXU1.W.{phs}.cVal.mag.f[MX]", p)
            self._set(f"MMXU1.A.{phs}.cVal.mag.f[MX]", abs(p) / v if v > 1 and share[k] else 0.0)

    def _render_dc(self, m: dict[str, float]) -> None:
        c = self.cfg
        v_dc = m["v_dc_v"]
        pv = -m["pv_p_w"]
        v_pv = c.pv_v_mpp_v if pv > 0 else 0.0
        v_bat = c.battery_v_nom_v * (0.9 + 0.2 * m["soc"])  # a simple open-circuit voltage curve
        for ref, value in (("MMDC1.Vol", v_pv), ("MMDC1.Amp", pv / v_pv if v_pv else 0.0),
                           ("MMDC2.Amp", m["dc_load_w"] / v_dc if v_dc > 1 else 0.0),
                           ("MMDC3.Vol", v_dc), ("MMDC3.Amp", -m["link_p_w"] / v_dc if v_dc > 1 else 0.0),
                           ("MMDC4.Vol", v_dc), ("MMDC4.Amp", m["batt_p_w"] / v_dc if v_dc > 1 else 0.0),
                           ("ZBAT1.Vol", v_bat), ("ZBAT1.Amp", m["batt_p_w"] / v_bat),
                           ("ZBTC1.ChaV", v_bat), ("ZBTC1.ChaA", m["batt_p_w"] / v_bat)):
            self._set(f"{ref}.instMag.f[MX]", value)
            self._set(f"{ref}.mag.f[MX]", value)

    # -- SetDataValues -----------------------------------------------------------------------------------
    def _on_write(self, domain: str, item: str, node: Node, value: Any) -> int | None:
        if domain != self.ld:
            return OBJECT_ACCESS_DENIED
        if item in self._controls:
            return self._operate(item, value)
        if isinstance(value, dict) and item + "$f" in self._setpoints:  # a whole setMag/subMag structure
            item, value, node = item + "$f", value.get("f"), node.children["f"]
        f = self._setpoints.get(item)
        if f is None:
            return OBJECT_ACCESS_DENIED
        ours = f.to_ours(value)
        if not self._accept(f.name, ours):
            return OBJECT_VALUE_INVALID
        node.value = value
        self.erbank.setpoints[f.name][0] = ours
        return None

    def _operate(self, item: str, oper: Any) -> int | None:
        do, name, fixed = self._controls[item]
        if not isinstance(oper, dict) or "ctlVal" not in oper:
            return OBJECT_VALUE_INVALID
        ctl_val = oper["ctlVal"]
        if fixed is not None:  # DERStop: true stops, false does nothing
            if ctl_val is not True:
                return None if ctl_val is False else OBJECT_VALUE_INVALID
            value = fixed
        else:
            value = float(ctl_val)
        if not self._accept(name, value):
            return OBJECT_VALUE_INVALID
        if not oper.get("Test", False):
            self.erbank.setpoints[name][0] = value
            self._set(f"{do}.stVal[ST]", True if fixed is not None else int(value))
            if fixed is not None:
                self._set("DRCC1.DERStr.stVal[ST]", int(fixed))
            self._set(f"{do}.ctlNum[ST]", int(oper.get("ctlNum", 0)) & 0xFF)
        return None

    def _accept(self, name: str, ours: float) -> bool:
        try:
            self.capabilities.check(Setpoint({name: ours}))
        except SetpointRejected:
            return False
        return not (name in INTEGER_SETPOINTS and not float(ours).is_integer()) and bool(np.isfinite(ours))
