"""EV charging: an AC wallbox (one connector) with the EV plugged into it, reached over OCPP 1.6J or 2.0.1.

In OCPP the wallbox is the websocket client and our CSMS is the server: the address
``ocpp16://HOST:PORT/CP_ID`` means "our CSMS listens on HOST:PORT and this driver manages charge point
CP_ID". The model (:mod:`devices.wallbox.model`) imports no protocol code.
"""

from __future__ import annotations

from devices.base import Capabilities, Limit
from devices.family import Family, Input
from devices.wallbox.model import ENV_INPUTS, MEASUREMENTS, WallboxBank, WallboxConfig


def _capabilities(cfg: WallboxConfig) -> Capabilities:
    return Capabilities(
        measurements=MEASUREMENTS,
        setpoints={"p_max_w": Limit(0.0, cfg.p_hw_max_w), "i_max_a": Limit(0.0, cfg.max_current_a)},
    )


FAMILY = Family(
    name="wallbox",
    config=WallboxConfig,
    bank=WallboxBank,
    measurements=MEASUREMENTS,
    capabilities=_capabilities,
    injects=True,
    # the EV plugged in: from the EV fleet bay the wallbox is wired to
    inputs=tuple(Input(name, f"fleet.{name}") for name in ENV_INPUTS),
    safe_setpoint={"p_max_w": 0.0},
    drivers={"ocpp16": "devices.wallbox.driver:Ocpp16Driver", "ocpp201": "devices.wallbox.driver:Ocpp201Driver"},
    virtual={"ocpp16": "devices.wallbox.virtual:VirtualWallbox16",
             "ocpp201": "devices.wallbox.virtual:VirtualWallbox201"},
    description="AC wallbox + EV (charging limit in W or A; OCPP 1.6J / 2.0.1)",
)

__all__ = ["FAMILY", "WallboxBank", "WallboxConfig"]
