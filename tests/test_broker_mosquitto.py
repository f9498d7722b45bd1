"""A real Mosquitto with TLS (a throwaway self-signed CA) and an ACL in which only control components may
publish on the Control Broker topics. The test starts its own mosquitto on a free loopback port."""

from __future__ import annotations

import getpass
import os
import selectors
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cosim.messaging import (BrokerUnavailable, DeliveryTimeout, MessageBus, Record, topics)

pytestmark = pytest.mark.skipif(not (shutil.which("mosquitto") and shutil.which("mosquitto_passwd")
                                     and shutil.which("openssl")),
                                reason="needs the mosquitto, mosquitto_passwd and openssl binaries")

USERS = {"gesscon": "g-secret", "device": "d-secret"}
ACL = """\
# control components publish set-points and schedules and read everything
user gesscon
topic readwrite s4g/+/control/#
topic read s4g/#

# devices publish field data and read (never write) the control topics
user device
topic read s4g/+/control/#
topic readwrite s4g/+/data/#
"""


def _run(*cmd: str, cwd: Path) -> None:
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, timeout=30)


def _make_ca(d: Path, name: str) -> None:
    _run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN={name}",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def _make_certs(d: Path) -> None:
    _make_ca(d, "ca")
    _make_ca(d, "other-ca")  # a CA the broker's certificate does not chain to
    _run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=d)
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                                  "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    _run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
         "-out", "server.crt", "-days", "2", "-extfile", "server.ext", cwd=d)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    def __init__(self, d: Path) -> None:
        self.dir = d
        self.port = _free_port()
        self.ca = str(d / "ca.crt")
        self.other_ca = str(d / "other-ca.crt")
        (d / "acl").write_text(ACL)
        first = True
        for user, password in USERS.items():
            _run("mosquitto_passwd", *(["-c"] if first else []), "-b", "passwd", user, password, cwd=d)
            first = False
        conf = [
            "per_listener_settings false", "allow_anonymous false", f"password_file {d / 'passwd'}",
            f"acl_file {d / 'acl'}", "persistence false", "log_dest stderr", "log_type all",
            f"listener {self.port} 127.0.0.1", f"cafile {d / 'ca.crt'}", f"certfile {d / 'server.crt'}",
            f"keyfile {d / 'server.key'}", "tls_version tlsv1.2",
        ]
        if os.geteuid() == 0:
            conf.insert(0, f"user {getpass.getuser()}")  # do not drop to 'mosquitto': it could not read the keys
        (d / "mosquitto.conf").write_text("\n".join(conf) + "\n")
        self.proc = subprocess.Popen(["mosquitto", "-c", str(d / "mosquitto.conf")], stderr=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL)
        self.log: list[str] = []
        self._wait_for_log(" running", timeout=10)

    def _wait_for_log(self, marker: str, timeout: float) -> None:
        """Read mosquitto's log until ``marker`` appears (an event, not a sleep). Raw ``os.read`` on the pipe:
        a buffered ``readline`` could keep lines in Python's buffer while ``select`` waits for more."""
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        deadline = time.monotonic() + timeout
        text = ""
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if not sel.select(deadline - time.monotonic()):
                    break
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                text += chunk.decode(errors="replace")
                if marker in text:
                    self.log.append(text)
                    threading.Thread(target=self._drain, daemon=True).start()
                    return
        self.log.append(text)
        self.stop()
        raise RuntimeError("mosquitto did not start:\n" + "".join(self.log))

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        while chunk := os.read(fd, 65536):
            self.log.append(chunk.decode(errors="replace"))

    def url(self, user: str, *, v: int = 3, ca: str | None = None) -> str:
        return f"mqtts://{user}:{USERS.get(user, 'wrong')}@127.0.0.1:{self.port}?ca={ca or self.ca}&v={v}"

    def client(self, user: str, client_id: str) -> mqtt.Client:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        c.username_pw_set(user, USERS[user])
        c.tls_set(ca_certs=self.ca)
        connected = threading.Event()
        c.on_connect = lambda *_: connected.set()
        c.connect("127.0.0.1", self.port)
        c.loop_start()
        assert connected.wait(5)
        return c

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    d = tmp_path_factory.mktemp("mosquitto")
    _make_certs(d)
    m = Mosquitto(d)
    yield m
    m.stop()


CONTROL = topics.control_topic("fur", "ess1", "p_w")
DATA = topics.data_topic("fur", "h1", "p_w")


def test_acl_refuses_a_device_publishing_on_control(broker):
    """Raw MQTT 5 clients: the broker answers the device's control publication with 'Not authorized' and
    never forwards it, while the control component's publication reaches the device."""
    g_got, d_got = [], []
    g_seen_data, d_seen_ctrl = threading.Event(), threading.Event()
    gesscon = broker.client("gesscon", "t-gesscon")
    device = broker.client("device", "t-device")
    subscribed = threading.Barrier(3)
    for c, got, ev in ((gesscon, g_got, g_seen_data), (device, d_got, d_seen_ctrl)):
        def on_message(_c, _u, msg, got=got, ev=ev):
            got.append((msg.topic, msg.payload))
            if (msg.topic == DATA) or (msg.topic == CONTROL and got is d_got):
                ev.set()
        c.on_message = on_message
        c.on_subscribe = lambda *_: subscribed.wait(5)
    gesscon.subscribe("s4g/#", 1)
    device.subscribe("s4g/+/control/#", 1)
    subscribed.wait(5)

    acks: dict[int, object] = {}
    acked = threading.Event()

    def on_publish(_c, _u, mid, rc, _p):
        acks[mid] = rc
        acked.set()
    device.on_publish = on_publish
    info = device.publish(CONTROL, b'[{"n":"fur/ess1/p_w","v":-5000}]', qos=1)
    assert acked.wait(5)
    rc = acks[info.mid]
    assert rc.is_failure and rc.value == 0x87, rc  # 135: Not authorized
    # same connection, published after: once gesscon sees it, the refused message would have arrived before
    device.publish(DATA, b'[{"n":"fur/h1/p_w","v":1}]', qos=1)
    assert g_seen_data.wait(5)
    assert [t for t, _ in g_got] == [DATA]
    gesscon.publish(CONTROL, b'[{"n":"fur/ess1/p_w","v":2500}]', qos=1)
    assert d_seen_ctrl.wait(5)
    assert d_got == [(CONTROL, b'[{"n":"fur/ess1/p_w","v":2500}]')]
    for c in (gesscon, device):
        c.disconnect()
        c.loop_stop()


def test_bus_over_tls_control_component_publishes(broker):
    # each role connects with the credentials of the side that publishes on it
    spec = {"default": "direct", "roles": {"control": broker.url("gesscon", v=5), "data": broker.url("device")}}
    with MessageBus(spec, seed=1) as bus:
        bus.register("gesscon", "controller")
        sub = bus.subscribe("control", "#", "lessag")
        data = bus.subscribe("data", "#", "gesscon")
        sched = [Record("p_w", value=float(h), unit="W", time=3600 * h) for h in range(24)]
        bus.publish("control", topics.schedule_topic("fur", "ess1"), sched, 0, "gesscon")
        bus.publish("data", DATA, [Record("p_w", value=1.0, unit="W")], 0, "h1")
        (msg,) = sub.deliver(0)
        assert len(msg.records) == 24 and msg.sender == "gesscon"
        assert len(data.deliver(0)) == 1
        assert bus.describe()["control"] == f"mqtts://127.0.0.1:{broker.port}"


def test_broker_refusal_reaches_the_bus_as_a_dead_letter(broker):
    """Defence in depth: even if the bus let a sender through, the broker's ACL refuses the publication;
    with MQTT 5 the bus learns it at once (dead letter, counted), and deliver() does not wait for it."""
    spec = {"default": "direct", "roles": {"control": broker.url("device", v=5)}}
    with MessageBus(spec, seed=1) as bus:
        bus.register("rogue", "controller")  # the bus's own ACL would stop an unregistered device
        sub = bus.subscribe("control", "#")
        bus.publish("control", CONTROL, [Record("p_w", value=-5000.0, unit="W")], 0, "rogue")
        assert sub.deliver(0) == []
        (dead,) = bus.dead_letters()
        assert "refused" in dead.reason and "Not authorized" in dead.reason and dead.sender == "rogue"
        assert bus.stats()["control"]["broker_refused"] == 1


def test_silent_acl_drop_with_mqtt311_times_out_with_a_typed_error(broker):
    spec = {"default": "direct", "roles": {"control": broker.url("device", v=3)}, "timeout_s": 1.0}
    with MessageBus(spec, seed=1) as bus:
        bus.register("rogue", "controller")
        sub = bus.subscribe("control", "#")
        bus.publish("control", CONTROL, [Record("p_w", value=-5000.0, unit="W")], 0, "rogue")
        with pytest.raises(DeliveryTimeout, match=r"1 message\(s\) of the control role.*did not come back"):
            sub.deliver(0)
        assert bus.in_flight() == 1  # still unaccounted for; close() does not wait for it again


def test_tls_and_credentials_are_enforced(broker):
    with pytest.raises(BrokerUnavailable, match=r"certificate verify failed|CERTIFICATE_VERIFY_FAILED"):
        MessageBus({"default": "direct", "roles": {"data": broker.url("gesscon", ca=broker.other_ca)}}).open()
    with pytest.raises(BrokerUnavailable, match=r"refused|Not authorized|Bad user name"):
        MessageBus({"default": "direct", "roles": {"data": broker.url("intruder")}, "timeout_s": 5}).open()
    with pytest.raises(BrokerUnavailable):  # plain MQTT on the TLS port
        MessageBus({"default": "direct", "roles": {"data": f"mqtt://gesscon:g-secret@127.0.0.1:{broker.port}"},
                    "timeout_s": 5}).open()
