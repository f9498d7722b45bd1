"""Grid battery: a battery behind a power conversion system (PCS) with P and Q setpoints."""

from devices.battery.grid_battery import FAMILY

__all__ = ["FAMILY"]
