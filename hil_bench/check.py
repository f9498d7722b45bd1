"""``s4g bench check``: reach every device that is not virtual before anything runs.

For each real device (an address with a host) and each replayed one: connect with the family's driver, ask
what it is (``Driver.identity()``: the SunSpec common model, the BMS manufacturer frame, the OCPP
BootNotification, ...), read once to measure the round trip, and list the setpoints it accepts. A bench run
does the same first and refuses to start unless every one answered.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Mapping, Sequence

from rich.table import Table

from devices import registry
from devices.base import Address, DeviceError, Setpoint
from devices.io_loop import IoLoop
from hil_bench.boundary import DevicePlan

READS = 3
# The check asks whether a device is there and answers. With the cycle's own timeout (50 ms at a 100 ms cycle),
# one slow first read on a busy host would refuse the whole bench; the run itself keeps the cycle's timeout,
# and the check's median round trip is shown beside it.
CHECK_TIMEOUT_S = 2.0
IDENTITY_KEYS = ("manufacturer", "model", "serial", "version", "vendor", "firmware", "protocol")


@dataclass
class CheckResult:
    device: str
    family: str
    address: str
    reachable: bool
    identity: Mapping[str, Any] = field(default_factory=dict)
    capabilities: str = ""
    rtt_ms: float | None = None
    error: str = ""
    armed: bool | None = None  # safe setpoint written (bench run only)


def capabilities_text(plan: DevicePlan, spec_config: Any) -> str:
    caps = plan.family.capabilities(spec_config)
    return ", ".join(f"{n} [{lim.min:g}, {lim.max:g}]" for n, lim in caps.setpoints.items()) or "read-only"


def identity_text(identity: Mapping[str, Any]) -> str:
    shown = [f"{k}={identity[k]}" for k in IDENTITY_KEYS if identity.get(k) not in (None, "")]
    extra = [f"{k}={v}" for k, v in identity.items() if k not in IDENTITY_KEYS and k != "address"
             and isinstance(v, (str, int, float)) and v != ""]
    return ", ".join(shown + extra[:3]) or "-"


async def check_device(plan: DevicePlan, config: Any, *, arm: bool = False) -> CheckResult:
    """Connect, identify, read ``READS`` times (median round trip); with ``arm``, write the safe setpoint."""
    caps = plan.family.capabilities(config)
    result = CheckResult(plan.id, plan.family.name, plan.driver_address or plan.address, False,
                         capabilities=capabilities_text(plan, config))
    address = Address.parse(plan.driver_address or plan.address)
    try:
        driver = registry.driver_class(address)(address, caps, timeout_s=max(plan.timeout_s, CHECK_TIMEOUT_S))
    except (KeyError, ValueError) as exc:
        result.error = str(exc)
        return result
    try:
        await asyncio.wait_for(driver.connect(), timeout=max(plan.timeout_s, CHECK_TIMEOUT_S) * 4 + 1)
        samples = []
        for _ in range(READS):
            t0 = time.perf_counter()
            await driver.read()
            samples.append(time.perf_counter() - t0)
        result.rtt_ms = sorted(samples)[len(samples) // 2] * 1000.0
        result.identity = dict(await driver.identity())
        result.reachable = True
        if arm:
            if plan.family.safe_setpoint:  # a device that takes no setpoint (a meter) is always safe
                await driver.write(Setpoint(plan.family.safe_setpoint))
            result.armed = True
    except (DeviceError, TimeoutError, OSError) as exc:
        result.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if result.reachable and arm:
            result.armed = False
    finally:
        try:
            await driver.close()
        except DeviceError:
            pass
    return result


def check_all(plans: list[tuple[DevicePlan, Any]], io: IoLoop | None = None, *, arm: bool = False) -> list[CheckResult]:
    """Check the devices concurrently on ``io`` (a temporary I/O loop if none)."""
    if not plans:
        return []
    own = io is None
    loop = io or IoLoop("s4g-bench-check")
    try:
        budget = max(max(p.timeout_s, CHECK_TIMEOUT_S) for p, _ in plans) * (READS + 6) + 10
        results = loop.gather([check_device(p, c, arm=arm) for p, c in plans], timeout_s=budget)
    finally:
        if own:
            loop.close()
    out = []
    for (plan, _config), res in zip(plans, results):
        if isinstance(res, BaseException):
            res = CheckResult(plan.id, plan.family.name, plan.address, False, error=f"{type(res).__name__}: {res}")
        out.append(res)
    return out


def table(results: list[CheckResult], hosted: Sequence[DevicePlan] = ()) -> Table:
    t = Table(title="bench check: devices that are not virtual")
    for col in ("device", "family", "address", "reachable", "identity", "setpoints", "round trip"):
        t.add_column(col, justify="right" if col == "round trip" else "left")
    for r in results:
        ok = "[green]yes[/]" if r.reachable else f"[red]no[/] {r.error}"
        if r.armed is False:
            ok += f" [red](safe setpoint refused: {r.error})[/]"
        rtt = f"{r.rtt_ms:.1f} ms" if r.rtt_ms is not None else "-"
        t.add_row(r.device, r.family, r.address, ok, identity_text(r.identity), r.capabilities, rtt)
    for p in hosted:
        t.add_row(p.id, p.family.name, p.address, "[cyan]virtual[/] (the bench starts it)", "-", "-", "-")
    return t
