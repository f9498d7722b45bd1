"""The scenario section ``sensorthings:`` (registered by entry point): serve the live run over the SensorThings API.

```yaml
sensorthings:
  serve: {host: 127.0.0.1, port: 8080}   # the API (and GUIs) while the run goes; port 0 = any free port
  mqtt: mosquitto://127.0.0.1:1883        # MQTT extension: each new Observation on v1.1/Datastreams(id)/Observations
  dwh: postgresql://postgres@127.0.0.1:5432/s4g   # also write the observations into the warehouse (COPY per step)
```
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ServeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)


class StaSpec(BaseModel):
    """Serve the live run over the SensorThings API (and its MQTT extension); optionally feed the warehouse."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    serve: ServeSpec | None = ServeSpec()
    mqtt: str | None = Field(None, description="broker address of the MQTT extension (mosquitto://host:port, ...)")
    dwh: str | None = Field(None, description="postgresql://... address of the warehouse; none: no warehouse")

    @field_validator("mqtt")
    @classmethod
    def _broker(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from cosim.messaging.config import parse_broker_url

        if parse_broker_url(v).kind != "mqtt":
            raise ValueError("expected a real broker address (mosquitto://host:port, mqtt://..., mqtts://...)")
        return v

    @field_validator("dwh")
    @classmethod
    def _dwh(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("postgresql://", "postgres://")):
            raise ValueError("expected postgresql://[user@]host[:port]/dbname")
        return v
