"""Our CSMS stand-alone (``s4g device serve csms``); the implementation lives in :mod:`devices.wallbox.csms`.

This package defines no device family: it only gives the command line its ``csms`` entry.
"""
