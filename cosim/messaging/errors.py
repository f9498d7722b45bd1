"""Typed errors of the messaging layer. Every failure a caller can act on has its own class."""

from __future__ import annotations


class MessagingError(Exception):
    """Base class of every error raised by ``cosim.messaging``."""


class SenMLError(MessagingError, ValueError):
    """A SenML payload or record is malformed. ``reason`` says what is wrong, ``index`` which record (or None)."""

    def __init__(self, reason: str, index: int | None = None) -> None:
        self.reason = reason
        self.index = index
        super().__init__(reason if index is None else f"record {index}: {reason}")


class TopicError(MessagingError, ValueError):
    """A topic or topic filter is malformed, or does not belong to the role it is used with."""


class PublishNotAllowed(MessagingError, PermissionError):
    """A sender tried to publish on a role it may not publish on (e.g. a device on the Control Broker)."""


class BrokerUnavailable(MessagingError, ConnectionError):
    """A broker could not be started, reached, authenticated against or subscribed to in time."""


class DeliveryTimeout(MessagingError, TimeoutError):
    """Messages published in this process did not come back from the broker within the wall-clock timeout."""
