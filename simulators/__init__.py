"""Simulators of the co-simulation (grid, profiles, EV fleet)."""

from simulators import pandapower_lazy

pandapower_lazy.defer()  # before any simulator imports pandapower: its plotting etc. load only when used
