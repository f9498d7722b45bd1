"""The battery parameters, one name each, shared by every model that describes a battery or a site contract.

Device families (battery, pv_battery, fronius, libal) nest :class:`BatteryParams` under ``battery:``; the
controllers' views of a site (PROFESS, GESSCon) build on :class:`BatteryRatings` and :class:`ContractLimits`, so
a parameter has the same name, unit and bounds in a scenario file, a device model and an optimiser.

Names that older scenario files used are refused with a message naming the new one (:func:`refuse_renamed`), so a
renamed key never passes silently as an unknown-but-ignored field.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: old name -> new name; the value of each is unchanged unless the note says how to convert it
RENAMED: Mapping[str, tuple[str, str]] = {
    "import_limit_w": ("contract_import_w", ""),
    "export_limit_w": ("contract_export_w", ""),
    "grid_charging": ("allow_grid_charging", ""),
    "min_reserve_pct": ("soc_reserve", " (a fraction 0..1: divide the percentage by 100)"),
}


def refuse_renamed(data: Any, accepted: set[str] | None = None) -> Any:
    """A ``mode="before"`` check: ValueError naming the new key for every old key in ``data``."""
    if isinstance(data, Mapping):
        for old, (new, note) in RENAMED.items():
            if old in data and (accepted is None or old not in accepted):
                raise ValueError(f"'{old}' was renamed to '{new}'{note}")
    return data


class ParamsModel(BaseModel):
    """Base of every model holding battery or contract parameters: unknown keys and renamed keys are errors."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        return refuse_renamed(data, set(cls.model_fields))


class BatteryRatings(ParamsModel):
    """Energy, power ratings, efficiencies and SoC window of a battery (AC side, load arrow: + = charging)."""

    capacity_wh: float = Field(gt=0, description="usable energy between SoC 0 and 1")
    p_charge_max_w: float = Field(gt=0, description="charge power rating (AC side)")
    p_discharge_max_w: float = Field(gt=0, description="discharge power rating (AC side)")
    eta_charge: float = Field(0.95, gt=0, le=1, description="AC -> stored")
    eta_discharge: float = Field(0.95, gt=0, le=1, description="stored -> AC")
    soc_min: float = Field(0.05, ge=0, lt=1)
    soc_max: float = Field(0.95, gt=0, le=1)
    self_discharge_per_day: float = Field(0.0, ge=0, lt=1, description="fraction of stored energy lost per day")

    @model_validator(mode="after")
    def _window(self) -> BatteryRatings:
        if self.soc_min >= self.soc_max:
            raise ValueError(f"soc_min ({self.soc_min}) must be below soc_max ({self.soc_max})")
        return self


class BatteryParams(BatteryRatings):
    """A battery as a device model needs it: the ratings and its state at the start."""

    soc_init: float = Field(0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _init_in_window(self) -> BatteryParams:
        if not self.soc_min <= self.soc_init <= self.soc_max:
            raise ValueError(f"soc_init ({self.soc_init}) must lie in [soc_min, soc_max]")
        return self


class ContractLimits(ParamsModel):
    """The site's contractual limits at its connection point (W, > 0; None = no limit)."""

    contract_import_w: float | None = Field(None, gt=0, description="contractual import limit at the PCC")
    contract_export_w: float | None = Field(None, gt=0, description="contractual export limit at the PCC")


__all__ = ["RENAMED", "BatteryParams", "BatteryRatings", "ContractLimits", "ParamsModel", "refuse_renamed"]
