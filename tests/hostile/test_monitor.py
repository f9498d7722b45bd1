"""The bench monitor's HTTP API against hostile and clumsy clients: malformed requests get a 4xx answer, floods
and half-open connections do not stop it, connections are capped, and it keeps serving the page and the state.

Default: a few seconds. ``pytest tests/hostile --hostile-long`` runs many more hypothesis examples."""

from __future__ import annotations

import json
import math
import socket
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hil_bench.monitor import MonitorServer
from hil_bench.monitor.server import MAX_BODY, MAX_REQUEST

STATE = {"scenario": "s", "status": "running", "devices": [{"id": "d1", "value": math.nan}], "timing": {}}


def _examples(request, default: int, long: int) -> int:
    return long if request.config.getoption("--hostile-long", default=False) else default


@pytest.fixture(scope="module")
def monitor():
    stops: list[str] = []
    server = MonitorServer(lambda: json.loads(json.dumps(STATE)), lambda why: stops.append(why) or {"d1": "ok"},
                           port=0, max_connections=8, request_timeout_s=1.0)
    server.start()
    server.stops = stops
    yield server
    server.close()


def _exchange(server: MonitorServer, data: bytes, *, shut: bool = True) -> bytes:
    """Send ``data``, half-close, and read the whole answer (the server closes every connection)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        try:
            s.sendall(data)
            if shut:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):  # the server answered early and closed
            pass
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
            if b"text/event-stream" in out:  # an event stream never ends: its head is the answer
                break
    return out


def _status(answer: bytes) -> int | None:
    if not answer.startswith(b"HTTP/1.1 "):
        return None
    return int(answer[9:12])


def _healthy(server: MonitorServer) -> None:
    answer = _exchange(server, b"GET /api/state HTTP/1.1\r\nHost: x\r\n\r\n")
    assert _status(answer) == 200, answer[:200]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["scenario"] == "s"


MALFORMED = [
    (b"\r\n\r\n", 400),
    (b"GET\r\n\r\n", 400),
    (b"GET / HTTP/1.1 extra\r\n\r\n", 400),
    (b"GET noslash HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/9.9\r\n\r\n", 400),
    (b"G\xc3\x89T / HTTP/1.1\r\n\r\n", 400),
    (b"GET /\xff HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n folded: header\r\n\r\n", 400),
    (b"POST /api/stop HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
    (b"POST /api/stop HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n", 400),
    (b"POST /api/stop HTTP/1.1\r\nContent-Length: " + b"9" * 40 + b"\r\n\r\n", 400),
    (b"POST /api/stop HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
    (b"POST /api/stop HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1), 413),
    (b"POST /api/stop HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
    (b"GET / HTTP/1.1\r\nX: " + b"a" * (MAX_REQUEST + 10) + b"\r\n\r\n", 431),
    (b"DELETE /api/state HTTP/1.1\r\n\r\n", 405),
    (b"GET /api/nothing HTTP/1.1\r\n\r\n", 404),
    (b"GET /../../etc/passwd HTTP/1.1\r\n\r\n", 404),
    (b"GET / HTTP/1.1\r\nHost: x\r\n", 400),  # the head never ends: half a request, then EOF
]


@pytest.mark.parametrize("data,status", MALFORMED, ids=[repr(d[:30]) for d, _ in MALFORMED])
def test_malformed_requests_get_4xx_and_the_monitor_keeps_serving(monitor, data, status):
    assert _status(_exchange(monitor, data)) == status
    _healthy(monitor)
    assert monitor.stops == []  # nothing malformed ever reaches the emergency stop


def _request_heads():
    token = st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=40)
    line = st.one_of(
        st.builds(lambda m, t, v: f"{m} {t} {v}", st.sampled_from(["GET", "POST", "PUT", "HEAD", "", "get"]) | token,
                  st.sampled_from(["/", "/api/state", "/api/stop", "/events", "*"]) | token,
                  st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2", ""]) | token),
        token)
    header = st.builds(lambda k, v: f"{k}:{v}", st.sampled_from(["Content-Length", "Host", "Transfer-Encoding"])
                       | token, st.sampled_from([" 0", " 5", " -3", " x", " chunked"]) | token) | token
    return st.builds(lambda ln, hs, body, end: (ln + "\r\n" + "".join(h + "\r\n" for h in hs)).encode("latin-1")
                     + (b"\r\n" if end else b"") + body,
                     line, st.lists(header, max_size=4), st.binary(max_size=64), st.booleans())


def test_fuzzed_requests_never_stop_the_monitor(monitor, request):
    answered: list[int | None] = []

    @settings(max_examples=_examples(request, 60, 1500), deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(_request_heads())
    def one(data: bytes) -> None:
        answer = _exchange(monitor, data)
        status = _status(answer)
        # an answer is always a whole HTTP response; a stop request is only ever a well-formed POST /api/stop
        assert (status is None and answer == b"") or status in (200, 400, 404, 405, 408, 413, 431, 501), answer[:100]
        answered.append(status)

    one()
    _healthy(monitor)
    assert any(s is not None and 400 <= s < 500 for s in answered)
    assert all(why == "stop requested over HTTP" for why in monitor.stops)
    monitor.stops.clear()


def test_half_open_connections_are_cut_off_and_capped():
    """Idle sockets take connection slots only until the request timeout; past the cap a client gets 503."""
    server = MonitorServer(lambda: dict(STATE), lambda why: {}, port=0, max_connections=4, request_timeout_s=3.0)
    server.start()
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in range(4)]
    try:
        idle[0].sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # half a head, then silence
        idle[1].sendall(b"POST /api/stop HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")  # half a body
        assert _status(_exchange(server, b"GET /api/state HTTP/1.1\r\n\r\n")) == 503
        for s in idle:  # each one is answered 408 after the timeout and closed
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
            assert _status(answer) == 408
        _healthy(server)
        assert server.refused["over_capacity"] == 1 and server.refused["timeout"] == 4
    finally:
        for s in idle:
            s.close()
        server.close()


def test_an_open_event_stream_does_not_block_other_clients(monitor):
    with socket.create_connection(("127.0.0.1", monitor.port), timeout=30) as s:
        s.sendall(b"GET /events HTTP/1.1\r\n\r\n")
        head = b""
        while b"event: state" not in head:
            head += s.recv(65536)
        _healthy(monitor)  # served alongside
    _healthy(monitor)


def test_a_flood_of_requests_is_served_and_the_state_stays_right(monitor, request):
    n = _examples(request, 200, 5000)
    statuses: list[int | None] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        for _ in range(k):
            got = _status(_exchange(monitor, b"GET /api/state HTTP/1.1\r\n\r\n"))
            with lock:
                statuses.append(got)

    threads = [threading.Thread(target=worker, args=(n // 4,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(statuses) == n // 4 * 4 and set(statuses) <= {200, 503}  # 4 clients: under the cap of 8
    assert statuses.count(200) == len(statuses)
    _healthy(monitor)
