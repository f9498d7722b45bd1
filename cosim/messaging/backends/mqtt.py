"""The ``mqtt`` backend: one paho-mqtt 2.x client (callback API version 2) per role key.

``open()`` connects (TLS and user/password when the address says so), subscribes to the role's topic space
and returns only after the broker acknowledged the subscription, so nothing this process publishes afterwards
can be missed. The client re-subscribes after a reconnect. With MQTT 5 (``?v=5``) a publication the broker
refuses (PUBACK reason code >= 0x80, e.g. 0x87 "Not authorized" from a Mosquitto ACL) is reported to the bus;
with MQTT 3.1.1 a broker drops such a message silently and the bus notices only by its absence.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from pathlib import Path
from typing import Any, cast
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from devices import tls

from ..config import BrokerAddress
from ..errors import BrokerUnavailable
from .base import Backend, OnMessage, OnRefused

log = logging.getLogger(__name__)


def _nodelay(client: mqtt.Client) -> None:
    """Disable Nagle's algorithm: paho does not, and a burst of small publications then waits ~40 ms for the
    peer's delayed ACK on every round trip."""
    sock = client.socket()
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[attr-defined]  # paho: a protocol
        except OSError:  # not a TCP socket (e.g. a unix socket or websockets)
            pass


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


class MqttBackend(Backend):
    def __init__(self, address: BrokerAddress, *, subscribe: str, client_id: str, subscribe_qos: int = 1,
                 timeout: float = 10.0, clean_session: bool = True,
                 on_published: Callable[[int], None] | None = None, reconnect_max_s: int | None = None) -> None:
        # clean_session=False (MQTT 3.1.1): the broker keeps the subscription and queues QoS>0 messages while
        # this client is away (store-and-forward clients); on_published(mid) is called for every PUBACK.
        self.clean_session = clean_session
        self.on_published = on_published
        self.reconnect_max_s = reconnect_max_s  # paho backs off up to 120 s by default
        self.address = address
        self.label = address.label
        self.subscribe_filter = subscribe
        self.client_id = client_id
        self.subscribe_qos = subscribe_qos
        self.timeout = timeout
        self._client: mqtt.Client | None = None
        self._subscribed = threading.Event()
        self._failure: str | None = None
        self._sub_mid: int | None = None
        self._closing = False

    # -- lifecycle -------------------------------------------------------------------------------------------
    def open(self, on_message: OnMessage, on_refused: OnRefused) -> None:
        a = self.address
        protocol = mqtt.MQTTv5 if a.protocol == 5 else mqtt.MQTTv311
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=protocol,
                             clean_session=None if protocol == mqtt.MQTTv5 else self.clean_session)
        client.connect_timeout = self.timeout
        if a.username is not None:
            client.username_pw_set(a.username, a.password)
        if a.tls:
            # our context (devices.tls): verifies the broker against the CA and, with crl=, the CRL
            try:
                context = tls.client_context(tls.TlsFiles(
                    ca=_path(a.ca), cert=_path(a.certfile), key=_path(a.keyfile), crl=_path(a.crl)),
                    check_hostname=not a.insecure)
                client.tls_set_context(context)
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise BrokerUnavailable(f"{a.label}: TLS setup failed: {exc}") from exc

        def _on_connect(c: mqtt.Client, _ud: Any, _flags: Any, rc: Any, _props: Any) -> None:
            _nodelay(c)
            if rc.is_failure:
                self._failure = f"connection refused: {rc}"
                self._subscribed.set()
                return
            result, mid = c.subscribe(self.subscribe_filter, self.subscribe_qos)
            if result != mqtt.MQTT_ERR_SUCCESS:
                self._failure = f"subscribe failed: {mqtt.error_string(result)}"
                self._subscribed.set()
            self._sub_mid = mid

        def _on_subscribe(_c: mqtt.Client, _ud: Any, mid: int, codes: list[Any], _props: Any) -> None:
            if mid != self._sub_mid:
                return
            bad = [str(code) for code in codes if code.is_failure]
            if bad:
                self._failure = f"subscription to {self.subscribe_filter!r} refused: {', '.join(bad)}"
            self._subscribed.set()

        def _on_message(_c: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
            on_message(msg.topic, cast(bytes, msg.payload), bool(msg.retain))  # paho delivers bytes

        def _on_publish(_c: mqtt.Client, _ud: Any, mid: int, rc: Any, _props: Any) -> None:
            if rc is not None and rc.is_failure:
                on_refused(mid, str(rc))
            elif self.on_published is not None:
                self.on_published(mid)

        def _on_disconnect(_c: mqtt.Client, _ud: Any, _flags: Any, rc: Any, _props: Any) -> None:
            if self._closing:
                return
            if not self._subscribed.is_set():  # never got going: fail fast instead of waiting for the timeout
                self._failure = f"connection closed by the broker before the subscription: {rc}"
                self._subscribed.set()
                return
            log.warning("%s (%s): disconnected: %s; paho reconnects", self.label, self.client_id, rc)

        client.on_connect = _on_connect
        client.on_subscribe = _on_subscribe
        client.on_message = _on_message
        client.on_publish = _on_publish
        client.on_disconnect = _on_disconnect
        if self.reconnect_max_s is not None:
            client.reconnect_delay_set(min_delay=1, max_delay=self.reconnect_max_s)
        try:
            client.connect(a.host, a.port, keepalive=60)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise BrokerUnavailable(f"cannot connect to {a.label}: {exc}") from exc
        self._client = client
        _nodelay(client)
        client.loop_start()
        self._await_subscription(self._subscribed, self.timeout, lambda: self._failure)
        log.debug("%s: %s subscribed to %s", a.label, self.client_id, self.subscribe_filter)

    def send(self, wire_topic: str, payload: bytes, qos: int) -> int | None:
        client = self._client
        if client is None:
            raise BrokerUnavailable(f"{self.label}: not connected")
        info = client.publish(wire_topic, payload, qos=qos, retain=False)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            # NO_CONN: paho keeps QoS>0 messages and sends them after reconnecting
            raise BrokerUnavailable(f"{self.label}: publish failed: {mqtt.error_string(info.rc)}")
        return info.mid if self.address.protocol == 5 and qos > 0 else None

    def publish(self, wire_topic: str, payload: bytes, qos: int = 1) -> int:
        """Publish and return paho's message id (``on_published`` gets it back with the PUBACK)."""
        client = self._client
        if client is None:
            raise BrokerUnavailable(f"{self.label}: not connected")
        info = client.publish(wire_topic, payload, qos=qos, retain=False)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise BrokerUnavailable(f"{self.label}: publish failed: {mqtt.error_string(info.rc)}")
        return int(info.mid)

    @property
    def connected(self) -> bool:
        client = self._client
        return client is not None and client.is_connected()

    def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        self._closing = True
        try:
            client.disconnect()
        finally:
            client.loop_stop()
