"""Set-up of the worker processes of a study's own LocalCluster (a Dask preload module).

A terminal's Ctrl-C goes to every process of the foreground group: the study process and the workers it
spawned. The study process stops the running variants itself (each ends within one step and is recorded as
cancelled); a worker that took the same SIGINT would die mid-variant with a traceback and lose it. So the
workers leave SIGINT to the study process. Workers of an existing cluster (``--scheduler``) are not ours to
change and do not get this module.
"""

from __future__ import annotations

import signal
import threading
from typing import Any


def dask_setup(worker: Any) -> None:
    """Called by Dask in each worker process as it starts."""
    if threading.current_thread() is threading.main_thread():  # signal handlers can only be set there
        signal.signal(signal.SIGINT, signal.SIG_IGN)
