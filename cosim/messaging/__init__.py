"""The S4G middleware: broker roles, topic layout, SenML codec, deterministic message bus, fault injection and
SensorThings mapping. See docs/messaging.md.

    from cosim.messaging import MessageBus, Record, topics
    with MessageBus({"control": "direct"}, seed=1, start=start) as bus:
        bus.register("gesscon", "controller")
        bus.publish("control", topics.schedule_topic("fur", "ess1"), schedule_records, t_s=0, sender="gesscon")
"""

from __future__ import annotations

from . import senml, topics, units
from .bus import (DEFAULT_START, EXTERNAL_SENDER, DeadLetter, Message, MessageBus, Published, RoleStats,
                  Subscription, messages_signature)
from .config import BrokerAddress, DelaySpec, FaultSpec, MessagingSpec, parse_broker_url
from .embedded_broker import EmbeddedBroker
from .errors import (BrokerUnavailable, DeliveryTimeout, MessagingError, PublishNotAllowed, SenMLError,
                     TopicError)
from .faults import FaultDraw, FaultInjector
from .senml import RawRecord, Record

__all__ = [
    "DEFAULT_START", "EXTERNAL_SENDER", "BrokerAddress", "BrokerUnavailable", "DeadLetter", "DelaySpec",
    "DeliveryTimeout", "EmbeddedBroker", "FaultDraw", "FaultInjector", "FaultSpec", "Message", "MessageBus",
    "MessagingError", "MessagingSpec", "PublishNotAllowed", "Published", "RawRecord", "Record", "RoleStats",
    "SenMLError", "Subscription", "TopicError", "messages_signature", "parse_broker_url", "senml", "topics",
    "units",
]
