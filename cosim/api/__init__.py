"""The DSF-SE compatible REST API and the Professional GUI (``s4g api``).

Modules: errors (the typed error every bad input becomes, and the body-size guard), grids (uploaded grids:
DSF-SE or pandapower JSON, their single-line layout), timeseries (the load and PV profiles of a run),
simulation (one grid simulation in a worker thread: progress, abort, results), studies (study jobs on
cosim.study), jobs (the registry and its limits), app (the FastAPI routes), cli (the command).
"""
