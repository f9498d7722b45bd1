"""Fronius hybrid inverter with battery (Fur/Skive and Bolzano residential pilots).

Reached over SunSpec Modbus TCP (``sunspec+tcp://host:port/unit``: monitoring and model-124 storage control)
or the Fronius Solar API v1 (``fronius+http://host:port``: read-only monitoring).
"""

from devices.fronius.model import FAMILY

__all__ = ["FAMILY"]
