"""Household hybrid inverter: PV (MPPT) and an optional battery on one AC output."""

from devices.pv_battery.model import FAMILY

__all__ = ["FAMILY"]
