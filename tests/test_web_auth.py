"""Web access control (cosim/security/webauth.py) on the bench monitor, in the headless browser and over HTTP:
a viewer cannot stop the bench, an operator can, a resident sees only their house; a page from another origin
cannot stop it even in open-access mode; every control action lands in the audit log."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cosim.scenario import load
from cosim.security import webauth
from hil_bench.run import BenchResult, run_bench
from hil_bench.testing import pilot_data, write_scenario
from tests.test_monitor_browser import DEVICES, _browser

RESIDENT_SITE = "consumer_4006773"


def _post(url: str, headers: dict[str, str] | None = None, body: bytes = b"{}"):
    req = urllib.request.Request(url, data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_sessions_roles_csrf_and_expiry():
    now = [1000.0]
    users = [webauth.User("v", "viewer", webauth.hash_password("pw-v")),
             webauth.User("o", "operator", webauth.hash_password("pw-o")),
             webauth.User("r", "resident", webauth.hash_password("pw-r"), site="s1")]
    auth = webauth.WebAuth(users, session_s=60, clock=lambda: now[0])
    host = "127.0.0.1:1"
    login = lambda u, p: auth.gate("POST", "/auth/login", {}, json.dumps({"user": u, "password": p}).encode(),  # noqa: E731
                                   host=host, need=None)
    assert login("o", "wrong").status == 401 and login("nobody", "x").status == 401
    ok = login("o", "pw-o")
    cookie = {"cookie": ok.headers["Set-Cookie"].split(";")[0]}
    stop = lambda h: auth.gate("POST", "/api/stop", h, b"", host=host, need="operator", action="stop")  # noqa: E731
    assert stop(cookie).status == 403  # no CSRF token
    assert stop({**cookie, "x-csrf-token": ok.body["csrf"], "origin": "http://evil.example"}).status == 403
    assert isinstance(stop({**cookie, "x-csrf-token": ok.body["csrf"], "origin": f"http://{host}"}), webauth.Principal)
    v = login("v", "pw-v")
    vcookie = {"cookie": v.headers["Set-Cookie"].split(";")[0], "x-csrf-token": v.body["csrf"]}
    assert stop(vcookie).status == 403 and "operator" in stop(vcookie).body["error"]
    r = login("r", "pw-r").body
    assert r["site"] == "s1"
    now[0] += 61  # sessions expire
    assert stop({**cookie, "x-csrf-token": ok.body["csrf"]}).status == 401
    # the server audits the accepted action itself; the gate logs every refusal
    results = [e["result"] for e in auth.audit_entries if e["action"] == "stop"]
    assert len(results) == 5 and all(r.startswith("refused") for r in results)
    assert results[-1] == "refused: not logged in"
    with pytest.raises(ValueError, match="resident needs a site"):
        webauth.User("x", "resident", "h")


def _bench(tmp_path: Path, users: Path | None):
    data = pilot_data(duration="60min", bench={"rt_factor": 0.005, "virtual_step_s": 5, "read_at": 0.6,
                                               "monitor": {"port": 0, **({"users": str(users)} if users else {})}})
    data["devices"] = [d for d in data["devices"] if d["id"] in DEVICES or d["id"] == "pv_4005492"]
    data["controllers"] = [{"id": "sc", "kind": "self_consumption", "devices": DEVICES}]
    data.pop("variants", None)
    ready, box, result = threading.Event(), [], []

    def bench() -> None:
        try:
            result.append(run_bench(load(write_scenario(data, tmp_path / "monitor.yaml")), tmp_path / "run",
                                    progress=False, report=False, on_ready=lambda rt: (box.append(rt), ready.set())))
        except BaseException as exc:  # handed to the test thread
            result.append(exc)
            ready.set()

    thread = threading.Thread(target=bench, name="bench-under-test")
    thread.start()
    assert ready.wait(120) and box, result
    return box[0], thread, result


def _finish(rt, thread, result):
    if thread.is_alive():
        rt.emergency_stop("test cleanup")
    thread.join(120)
    return result[0]


def test_open_access_monitor_refuses_a_foreign_page(tmp_path):
    rt, thread, result = _bench(tmp_path, None)
    try:
        url = rt.monitor_url.rstrip("/")
        # what a page on another site can do: POST without the token, or with its own Origin
        assert _post(url + "/api/stop")[0] == 403
        assert _post(url + "/api/stop", {"Origin": "http://evil.example", "X-CSRF-Token": "guess"})[0] == 403
        assert rt.status == "running"
    finally:
        res = _finish(rt, thread, result)
    assert isinstance(res, BenchResult) and res.stop_reason == "emergency stop: test cleanup"


def test_viewer_cannot_stop_resident_sees_their_house_operator_stops(tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    users = tmp_path / "users.json"
    webauth.add_user(users, "vera", "viewer", "viewer-password")
    webauth.add_user(users, "otto", "operator", "operator-password")
    webauth.add_user(users, "rosa", "resident", "resident-password", site=RESIDENT_SITE)
    assert oct(users.stat().st_mode & 0o777) == "0o600"
    browser = _browser(tmp_path)
    rt, thread, result = _bench(tmp_path, users)
    try:
        url = rt.monitor_url
        wait = WebDriverWait(browser, 60, poll_frequency=0.1)
        js = browser.execute_script

        def login(user: str, password: str) -> None:
            browser.delete_all_cookies()
            browser.get(url)
            wait.until(lambda _: js("return !document.getElementById('login').hidden;"))
            browser.find_element("id", "login-user").send_keys(user)
            browser.find_element("id", "login-password").send_keys(password)
            browser.find_element("id", "login-submit").click()
            wait.until(lambda _: js("return document.getElementById('who').textContent;").startswith(user))
            wait.until(lambda _: js("return document.getElementById('conn').textContent;") == "live")

        assert _post(url + "api/stop")[0] == 401  # no login: nothing
        login("vera", "viewer-password")
        wait.until(lambda _: js("return document.querySelectorAll('tr[data-device]').length;") == len(DEVICES) + 1)
        wait.until(lambda _: not js("return document.getElementById('estop').disabled;"))
        browser.find_element("id", "estop").click()
        wait.until(lambda _: js("return document.getElementById('estop-result').textContent;").startswith("Refused"))
        assert "operator" in js("return document.getElementById('estop-result').textContent;")
        assert rt.status == "running"

        login("rosa", "resident-password")
        wait.until(lambda _: js("return document.querySelectorAll('tr[data-device]').length;") >= 1)
        shown = js("return [...document.querySelectorAll('tr[data-device]')].map(e => e.dataset.device);")
        assert shown == ["fronius_4006773"]

        login("otto", "operator-password")
        wait.until(lambda _: not js("return document.getElementById('estop').disabled;"))
        browser.find_element("id", "estop").click()
        wait.until(lambda _: js("return document.getElementById('estop').textContent;").startswith("Stopped:"))
    finally:
        browser.quit()
        res = _finish(rt, thread, result)
    assert isinstance(res, BenchResult) and res.stop_reason == "emergency stop: stop requested over HTTP"
    audit = [json.loads(line) for line in (tmp_path / "run" / "audit.jsonl").read_text().splitlines()]
    stops = [(e["user"], e["result"]) for e in audit if e["action"] == "emergency stop"]
    assert stops[0][0] is None and stops[0][1].startswith("refused")  # the anonymous POST
    assert ("vera", "refused: needs role operator") in stops and stops[-1] == ("otto", "ok")
