"""The brokers' security, the same policy on the embedded broker (amqtt + our plugins) and on a real Mosquitto
configured by the framework (TLS listener, require_certificate, use_identity_as_username, crlfile, ACL from the
topic map): anonymous, plain, foreign-CA, revoked and expired clients refused; each role's allowed traffic
works; a gateway cannot publish another site's data or on the control topics (refusal visible with MQTT 5);
our MQTT client checks the broker's certificate against the CRL."""

from __future__ import annotations

import getpass
import os
import queue
import selectors
import shutil
import socket
import ssl
import subprocess
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cosim.messaging import BrokerUnavailable, MessageBus, Record, topics
from cosim.messaging.embedded_broker import BrokerSecurity, EmbeddedBroker
from devices import pki as pki_mod
from cosim.security.broker_policy import BrokerPolicy, covers, mosquitto_acl, mosquitto_conf
from devices import tls
from tests.security_pki import SITE, pkis  # noqa: F401 - fixture

HAVE_MOSQUITTO = shutil.which("mosquitto") is not None


class Mosquitto:
    """A mosquitto the test starts on a free port with the framework's configuration and ACL."""

    def __init__(self, d: Path, pki: Path) -> None:
        d.mkdir(parents=True, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        acl = d / "acl"
        acl.write_text(mosquitto_acl(BrokerPolicy.from_pki(pki)))
        extra = {"log_dest": "stderr", "log_type": "all"}
        if os.geteuid() == 0:
            extra["user"] = getpass.getuser()  # do not drop to 'mosquitto': it could not read the keys
        (d / "mosquitto.conf").write_text(mosquitto_conf(pki, port=self.port, acl_file=acl, extra=extra))
        self.proc = subprocess.Popen(["mosquitto", "-c", str(d / "mosquitto.conf")], stderr=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL)
        self.log = ""
        fd = self.proc.stderr.fileno()
        deadline = time.monotonic() + 10
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while " running" not in self.log and time.monotonic() < deadline:
                if sel.select(deadline - time.monotonic()):
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        break
                    self.log += chunk.decode(errors="replace")
        if " running" not in self.log:
            self.stop()
            raise RuntimeError("mosquitto did not start:\n" + self.log)
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        while chunk := os.read(self.proc.stderr.fileno(), 65536):
            self.log += chunk.decode(errors="replace")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture(params=["embedded", "mosquitto"])
def broker(request, pkis, tmp_path):
    if request.param == "embedded":
        b = EmbeddedBroker(security=BrokerSecurity(pkis.dir, BrokerPolicy.from_pki(pkis.dir))).start()
        yield "embedded", b.port
        b.stop()
    else:
        if not HAVE_MOSQUITTO:
            pytest.skip("mosquitto is not installed")
        m = Mosquitto(tmp_path / "mosquitto", pkis.dir)
        yield "mosquitto", m.port
        m.stop()


class Client:
    """A raw paho client with a certificate (or none); events, not sleeps."""

    def __init__(self, port: int, files: tls.TlsFiles | None, *, v5: bool = False) -> None:
        self.port = port
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}",
                             protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
        if files is not None:
            self.c.tls_set_context(tls.client_context(files))
        self.settled = threading.Event()
        self.ok = False
        self.messages: queue.Queue = queue.Queue()
        self.subacks: dict[int, list] = {}
        self.pubacks: dict[int, object] = {}
        self.acked = threading.Condition()
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = lambda *a: self.settled.set()
        self.c.on_message = lambda _c, _u, m: self.messages.put((m.topic, m.payload))
        self.c.on_subscribe = self._on_subscribe
        self.c.on_publish = self._on_publish

    def _on_connect(self, _c, _u, _f, rc, _p) -> None:
        self.ok = not rc.is_failure
        self.settled.set()

    def _on_subscribe(self, _c, _u, mid, codes, _p) -> None:
        with self.acked:
            self.subacks[mid] = codes
            self.acked.notify_all()

    def _on_publish(self, _c, _u, mid, rc, _p) -> None:
        with self.acked:
            self.pubacks[mid] = rc
            self.acked.notify_all()

    def connect(self) -> bool:
        try:
            self.c.connect("127.0.0.1", self.port, keepalive=30)
        except (OSError, ssl.SSLError):
            return False
        self.c.loop_start()
        assert self.settled.wait(10)
        return self.ok

    def subscribe(self, topic_filter: str) -> bool:
        _, mid = self.c.subscribe(topic_filter, 1)
        with self.acked:
            assert self.acked.wait_for(lambda: mid in self.subacks, 10)
        return not any(code.is_failure for code in self.subacks[mid])

    def publish(self, topic: str, payload: bytes = b"1"):
        info = self.c.publish(topic, payload, qos=1)
        with self.acked:
            assert self.acked.wait_for(lambda: info.mid in self.pubacks, 10)
        return self.pubacks[info.mid]

    def received(self, until_topic: str) -> list[str]:
        """Topics received up to and including ``until_topic`` (a marker published last)."""
        got = []
        while True:
            topic, _ = self.messages.get(timeout=10)
            got.append(topic)
            if topic == until_topic:
                return got

    def received_all(self, wanted: set[str]) -> list[str]:
        """Topics received until every topic in ``wanted`` came (publishers of different clients interleave)."""
        got: list[str] = []
        while not wanted <= set(got):
            got.append(self.messages.get(timeout=10)[0])
        return got

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def _as(pkis, name, *, pki=None):
    return tls.TlsFiles.from_pki(pki or pkis.dir, name)


@pytest.mark.parametrize("who", ["plain", "anonymous", "wrong_ca", "revoked", "expired"])
def test_refused_clients(broker, pkis, who):
    _, port = broker
    files = {"plain": None, "anonymous": tls.TlsFiles.from_pki(pkis.dir),
             "wrong_ca": tls.TlsFiles(ca=tls.ca_file(pkis.dir), cert=tls.cert_file(pkis.other, "gesscon"),
                                      key=tls.key_file(pkis.other, "gesscon")),
             "revoked": _as(pkis, "gw-revoked"), "expired": _as(pkis, "gw-expired")}[who]
    c = Client(port, files)
    try:
        assert not c.connect()
    finally:
        c.close()


def test_each_role_gets_its_traffic_and_nothing_else(broker, pkis):
    kind, port = broker
    observer, gw, other_gw, ctl, reader, agent = (Client(port, _as(pkis, n)) for n in
                                                  ("cosim", f"gw-{SITE}", "gw-skive", "gesscon", "dwh", f"lessag-{SITE}"))
    clients = [observer, gw, other_gw, ctl, reader, agent]
    command = topics.smx_cmd_topic(SITE, "er", "EnergyRouterInverter/ZBTC1.BatChaPwr.setMag.f")
    telemetry = topics.smx_native_topic(SITE, "er", "EnergyRouterInverter/MMXN1.Watt.instMag.f")
    try:
        assert all(c.connect() for c in clients)
        for f in ("s4g/+/data/#", "s4g/+/control/#", "s4g/+/smx/#", "s4g/+/agg/#"):
            assert observer.subscribe(f)
        assert reader.subscribe("s4g/+/data/#") and ctl.subscribe("s4g/+/data/#")
        assert gw.subscribe(f"s4g/{SITE}/control/#") and other_gw.subscribe("s4g/skive/control/#")
        assert gw.subscribe(f"s4g/{SITE}/smx/+/cmd/#") and agent.subscribe(f"s4g/{SITE}/smx/+/native/#")
        # subscriptions outside the role: amqtt answers SUBACK 0x80, Mosquitto grants them and delivers nothing
        refused = [gw.subscribe("s4g/+/data/#"), other_gw.subscribe(f"s4g/{SITE}/control/#")]
        if kind == "embedded":
            assert refused == [False, False]
        # publications: the gateway's own site data passes; another site's data, control topics do not
        gw.publish(topics.data_topic(SITE, "h1", "p_w"))
        gw.publish(topics.data_topic("skive", "h1", "p_w"))
        gw.publish(topics.control_topic(SITE, "ess1", "p_w"))
        gw.publish(topics.smx_set_topic("skive", "ess1", "p_w"))
        gw.publish(command)  # a gateway reports the ER's telemetry but cannot command it
        gw.publish(telemetry)
        agent.publish(telemetry)  # nor can the local agent fake the ER's telemetry; it commands the ER
        agent.publish(command)
        reader.publish(topics.data_topic(SITE, "h9", "p_w"))
        other_gw.publish(topics.control_topic("skive", "ess1", "p_w"))
        # only control components publish on the control topics
        ctl.publish(topics.control_topic(SITE, "ess1", "p_w"))
        ctl.publish(topics.control_topic("skive", "ess2", "p_w"))
        # markers: a broker keeps each client's order, so the refused ones would have come before these
        gw.publish(topics.smx_meas_topic(SITE, "ess1", "marker"))
        other_gw.publish(topics.smx_meas_topic("skive", "ess1", "marker"))
        expected = {topics.data_topic(SITE, "h1", "p_w"), topics.control_topic(SITE, "ess1", "p_w"), command, telemetry,
                    topics.control_topic("skive", "ess2", "p_w"), topics.smx_meas_topic(SITE, "ess1", "marker"),
                    topics.smx_meas_topic("skive", "ess1", "marker")}
        got = observer.received_all(expected)
        assert sorted(got) == sorted(expected)  # nothing refused arrived, each allowed message once
        # each gateway receives its own site's set-point (and the ER command the agent sent) and nothing else; the
        # reader the gateway's data
        assert sorted(gw.received_all({topics.control_topic(SITE, "ess1", "p_w"), command})) == sorted(
            [topics.control_topic(SITE, "ess1", "p_w"), command])
        assert other_gw.received(until_topic=topics.control_topic("skive", "ess2", "p_w")) == [
            topics.control_topic("skive", "ess2", "p_w")]
        assert reader.received(until_topic=topics.data_topic(SITE, "h1", "p_w")) == [
            topics.data_topic(SITE, "h1", "p_w")]
        assert agent.received(until_topic=telemetry) == [telemetry]  # the gateway's, not its own refused one
    finally:
        for c in clients:
            c.close()


@pytest.mark.skipif(not HAVE_MOSQUITTO, reason="mosquitto is not installed")
def test_mqtt5_shows_the_refusal(pkis, tmp_path):
    m = Mosquitto(tmp_path / "m5", pkis.dir)
    gw = Client(m.port, _as(pkis, f"gw-{SITE}"), v5=True)
    try:
        assert gw.connect()
        assert not gw.publish(topics.data_topic(SITE, "h1", "p_w")).is_failure
        refused = gw.publish(topics.control_topic(SITE, "ess1", "p_w"))
        assert refused.is_failure and refused.value == 0x87  # Not authorized
    finally:
        gw.close()
        m.stop()


def test_the_bus_refuses_a_revoked_broker(tmp_path):
    """Our MQTT client checks the broker's certificate against the CRL (crl= / pki=)."""
    d = tmp_path / "pki"
    pki_mod.init(d)
    for name, role in (("broker", "broker"), ("cosim", "cosim")):
        pki_mod.issue(d, name, role)
    b = EmbeddedBroker(security=BrokerSecurity(d, BrokerPolicy.from_pki(d))).start()
    try:
        url = f"mqtts://127.0.0.1:{b.port}?pki={d}&identity=cosim"
        with MessageBus({"data": url}, seed=1) as bus:  # works while the broker's certificate is good
            bus.register("x", "controller")
            sub = bus.subscribe("data", "s4g/+/data/#", subscriber="x")
            bus.publish("data", topics.data_topic("a", "b", "p_w"), [Record("p_w", value=1.0, unit="W")], t_s=0,
                        sender="x")
            assert len(sub.deliver(0)) == 1
        pki_mod.revoke(d, "broker", reason="key_compromise")
        with pytest.raises(BrokerUnavailable, match="certificate revoked"):
            MessageBus({"data": url}, seed=1).open()
    finally:
        b.stop()


def test_policy_rules():
    pol = BrokerPolicy([pki_mod_ident("gw", "gateway", "s1"), pki_mod_ident("c", "controller"),
                        pki_mod_ident("l1", "controller", "s1"),
                        pki_mod_ident("r1", "reader", "s1"), pki_mod_ident("cp", "chargepoint")])
    assert pol.may_publish("gw", "s4g/s1/data/h/p_w") and not pol.may_publish("gw", "s4g/s2/data/h/p_w")
    assert not pol.may_publish("gw", "s4g/s1/control/h/p_w") and pol.may_receive("gw", "s4g/s1/control/h/p_w")
    assert pol.may_publish("c", "s4g/s2/control/h/p_w") and not pol.may_publish("c", "s4g/s2/data/h/p_w")
    assert pol.may_subscribe("r1", "s4g/s1/data/#") and not pol.may_subscribe("r1", "s4g/+/data/#")
    assert not pol.may_publish("cp", "s4g/s1/data/h/p_w") and not pol.may_subscribe("cp", "#")
    assert not pol.may_publish("nobody", "s4g/s1/data/h/p_w") and not pol.may_receive("gw", "$SYS/broker/uptime")
    assert covers("s4g/+/data/#", "s4g/s1/data/h/+") and not covers("s4g/s1/data/#", "s4g/+/data/#")
    assert covers("a/#", "a") and not covers("a/+", "a/#")
    acl = mosquitto_acl(pol)
    gw_block = acl.split("user gw\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert {"topic read s4g/s1/smx/+/set/#", "topic read s4g/s1/smx/+/cmd/#", "topic write s4g/s1/smx/+/meas/#",
            "topic write s4g/s1/smx/+/native/#"} <= set(gw_block) and not any("smx/#" in x for x in gw_block)
    assert "user cp" not in acl
    # a device family's commands and telemetry are apart: the gateway reports, the site's controller commands
    er_cmd, er_tel = "s4g/s1/smx/er/cmd/A/DRCC1.DERStr.ctlNum", "s4g/s1/smx/er/native/A/B.f"
    assert pol.may_publish("gw", er_tel) and not pol.may_publish("gw", er_cmd) and pol.may_receive("gw", er_cmd)
    assert pol.may_publish("l1", er_cmd) and not pol.may_publish("l1", er_tel) and pol.may_receive("l1", er_tel)
    assert not pol.may_publish("l1", "s4g/s2/smx/er/cmd/X") and not pol.may_publish("c", er_cmd)


def pki_mod_ident(name, role, site=None):
    from cosim.security.broker_policy import Identity

    return Identity(name, role, site)
