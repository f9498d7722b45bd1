"""The scenario's ``security:`` section: run every link that supports it with TLS and client certificates.

```yaml
security:
  pki: pki/            # a PKI directory made by `s4g pki init` (relative to the scenario file)
  broker: broker       # the certificate the embedded brokers present (role broker)
  client: cosim        # the certificate the co-simulation's bus presents to every broker (role cosim)
```

That is the S4G brokers of the ``messaging:`` section: each embedded broker serves TLS only, requires a
client certificate from the PKI (checked against its CRL) and applies the topic policy of
:mod:`cosim.security.broker_policy`; the bus connects with the ``client`` certificate and checks the broker's
against the same CA and CRL. And the run's own virtual devices (an address without host, ``sunspec+tcp://``)
on the protocols that have TLS: they serve with the ``device`` certificate, their drivers present ``client``.
Results are identical to a plain run (tested on the pilot).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class SecuritySpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    pki: Path = Field(description="PKI directory (s4g pki init); relative to the scenario file")
    broker: str = Field("broker", description="certificate name of the embedded brokers (role broker)")
    client: str = Field("cosim", description="certificate name of the co-simulation's bus clients (role cosim); "
                                             "the drivers of the run's virtual devices present it too")
    device: str = Field("device", description="certificate name the run's virtual devices serve with (role "
                                              "device), on the protocols that have TLS (SunSpec: Modbus/TCP "
                                              "Security)")


def device_tls(spec: SecuritySpec | None) -> dict[str, str] | None:
    """The device host's ``tls`` parameter (devices.simulator.DeviceSim.init): None without ``security:``."""
    if spec is None:
        return None
    return {"pki": str(spec.pki), "server": spec.device, "client": spec.client}


def bus_security(spec: SecuritySpec | None, namespace: str = "") -> dict[str, Any]:
    """Keyword arguments for :class:`cosim.messaging.bus.MessageBus` (empty without ``security:``)."""
    if spec is None:
        return {}
    from cosim.messaging.embedded_broker import BrokerSecurity
    from cosim.security.broker_policy import BrokerPolicy

    policy = BrokerPolicy.from_pki(spec.pki, namespace=namespace)
    return {"security": BrokerSecurity(spec.pki, policy, identity=spec.broker), "client_identity": spec.client}
