"""OGC SensorThings API v1.1 (Sensing) over run directories and the live run; see docs/sensorthings.md.

``store`` (the entity tables in DuckDB), ``filter`` (the ``$filter`` grammar -> SQL), ``options`` (query options),
``engine`` (resource paths -> JSON), ``server`` (FastAPI + uvicorn), ``live`` (a running co-simulation and the MQTT
extension), ``client`` (reading a site's broker topics, for GESSCon), ``wrapper`` (the aggregator-side OGC wrapper
with its durable queue).
"""
