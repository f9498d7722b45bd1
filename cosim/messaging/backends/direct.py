"""The ``direct`` backend: no broker, the payload goes straight back to the bus inside ``send``."""

from __future__ import annotations

from .base import Backend, OnMessage, OnRefused


class DirectBackend(Backend):
    synchronous = True
    label = "direct"

    def __init__(self) -> None:
        self._on_message: OnMessage | None = None

    def open(self, on_message: OnMessage, on_refused: OnRefused) -> None:
        self._on_message = on_message

    def send(self, wire_topic: str, payload: bytes, qos: int) -> int | None:
        if self._on_message is None:
            raise RuntimeError("direct backend used before open()")
        self._on_message(wire_topic, payload, False)
        return None

    def close(self) -> None:
        self._on_message = None
