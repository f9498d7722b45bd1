"""The live monitor of a bench run (the Technical GUI, first version): one static page, no build step.

The bench serves it at ``http://HOST:PORT/`` (``bench.monitor``); the page listens to ``/events``
(Server-Sent Events) and shows, per device, the measurements and setpoints flowing through the SMX broker,
the watchdog state, refused setpoints, the lateness statistics and the bench events, with an emergency-stop
button (``POST /api/stop``, the same as ``s4g bench stop``). ``/api/state`` returns the same data as JSON.
"""

from hil_bench.monitor.server import MonitorServer

__all__ = ["MonitorServer"]
