"""The shared data warehouse on PostgreSQL (``postgres``) and its Data-Broker ingester (``ingest``);
see docs/sensorthings.md. The embedded default (Parquet + DuckDB per run) stays in the run directory."""
