"""Transports of the message bus, one small module each (the python-can ``interfaces`` idea).

A backend moves payload bytes of one role key to a broker and back:

* ``direct``  -- no broker; ``send`` hands the payload straight back to the bus (synchronously);
* ``mqtt``    -- a paho-mqtt client on a real broker (Mosquitto) or on a secure embedded broker; it
  subscribes to the role's whole topic space once, so every publication of this process comes back;
* ``lean``    -- a small MQTT 3.1.1 client for the plain embedded broker (batched writes and reads).

The bus owns ordering, faults and decoding; a backend only carries bytes.
"""

from __future__ import annotations

from .base import Backend, OnBatch, OnMessage, OnRefused


def create_backend(address: object, *, subscribe: str, client_id: str, subscribe_qos: int,
                   timeout: float, lean: bool = False) -> Backend:
    """A backend for a parsed ``BrokerAddress`` (``embedded`` must already be resolved to an mqtt address).
    ``lean``: the lean client (plain MQTT 3.1.1 without credentials, QoS <= 1: the plain embedded broker)."""
    from ..config import BrokerAddress

    assert isinstance(address, BrokerAddress)
    if lean:
        from .lean import LeanMqttBackend

        return LeanMqttBackend(address, subscribe=subscribe, client_id=client_id, subscribe_qos=subscribe_qos,
                               timeout=timeout)
    if address.kind == "direct":
        from .direct import DirectBackend

        return DirectBackend()
    if address.kind == "mqtt":
        from .mqtt import MqttBackend

        return MqttBackend(address, subscribe=subscribe, client_id=client_id, subscribe_qos=subscribe_qos,
                           timeout=timeout)
    raise ValueError(f"no backend for broker kind {address.kind!r}")


__all__ = ["Backend", "OnBatch", "OnMessage", "OnRefused", "create_backend"]
