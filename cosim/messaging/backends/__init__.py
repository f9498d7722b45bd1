"""Transports of the message bus, one small module each (the python-can ``interfaces`` idea).

A backend moves payload bytes of one role key to a broker and back:

* ``direct``  -- no broker; ``send`` hands the payload straight back to the bus (synchronously);
* ``mqtt``    -- a paho-mqtt client on a real broker (Mosquitto) or on the embedded amqtt broker; it
  subscribes to the role's whole topic space once, so every publication of this process comes back.

The bus owns ordering, faults and decoding; a backend only carries bytes.
"""

from __future__ import annotations

from .base import Backend, OnMessage, OnRefused


def create_backend(address: object, *, subscribe: str, client_id: str, subscribe_qos: int,
                   timeout: float) -> Backend:
    """A backend for a parsed ``BrokerAddress`` (``embedded`` must already be resolved to an mqtt address)."""
    from ..config import BrokerAddress

    assert isinstance(address, BrokerAddress)
    if address.kind == "direct":
        from .direct import DirectBackend

        return DirectBackend()
    if address.kind == "mqtt":
        from .mqtt import MqttBackend

        return MqttBackend(address, subscribe=subscribe, client_id=client_id, subscribe_qos=subscribe_qos,
                           timeout=timeout)
    raise ValueError(f"no backend for broker kind {address.kind!r}")


__all__ = ["Backend", "OnMessage", "OnRefused", "create_backend"]
