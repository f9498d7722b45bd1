"""The Residential and Technical GUIs in a real headless browser (chromium + chromedriver via selenium) on a
phone-sized screen: the pages render, their numbers match the run's own files, and the access rules hold (a
resident sees only their household; the API and the technical page need other roles). Skipped, with the reason,
only when the browser, its driver or selenium is not installed."""

from __future__ import annotations

import json

import duckdb
import pytest

from cosim.gui.app import create_gui_app
from cosim.security.webauth import User, WebAuth, hash_password
from cosim.sta.server import HttpServer
from cosim.sta.store import Store
from tests.sta_runs import pilot_run
from tests.test_monitor_browser import _browser

HOME = "consumer_4006773"
OTHER = "consumer_4018215"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return pilot_run(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def server(run_dir):
    store = Store()
    store.add_run(run_dir)
    users = [User("alice", "resident", hash_password("alice-pw"), site=HOME),
             User("eve", "engineer", hash_password("eve-pw"))]
    with HttpServer(create_gui_app(store, auth=WebAuth(users))) as srv:
        yield srv


@pytest.fixture
def browser(tmp_path):
    b = _browser(tmp_path)
    b.set_window_size(390, 844)  # a phone
    yield b
    b.quit()


def _login(browser, url, user, password):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    wait = WebDriverWait(browser, 30, poll_frequency=0.1)
    wait.until(lambda b: b.find_element(By.ID, "user").is_displayed())
    browser.find_element(By.ID, "user").send_keys(user)
    browser.find_element(By.ID, "password").send_keys(password)
    browser.find_element(By.ID, "login-button").click()
    wait.until(lambda b: b.execute_script("return document.body.dataset.ready === '1';"))
    return wait


def _fetch_status(browser, url):
    return browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0], {credentials: 'same-origin'}).then(r => done(r.status));", url)


def _value(browser, selector):
    return browser.execute_script("const e = document.querySelector(arguments[0]); return e ? e.dataset.value : null;",
                                  selector)


def _last(run_dir, datastream):
    rows = duckdb.sql(f"SELECT result FROM '{run_dir}/sensorthings/observations.parquet' WHERE datastream = "
                      f"'{datastream}' ORDER BY phenomenon_time DESC LIMIT 1").fetchall()
    return rows[0][0]


def test_residential_page_shows_the_household_and_nothing_else(server, browser, run_dir):
    _login(browser, server.url + "/gui/home", "alice", "alice-pw")
    assert browser.execute_script("return document.getElementById('site').textContent;") == HOME
    # power now: the last values of the household's Datastreams (the run's own Parquet file)
    grid = _last(run_dir, f"fur_skive/load:{HOME}/p_w")
    pv = _last(run_dir, "fur_skive/fronius_4006773/pv_p_w")
    batt = _last(run_dir, "fur_skive/fronius_4006773/batt_p_w")
    dev = _last(run_dir, "fur_skive/fronius_4006773/p_w")
    assert float(_value(browser, "#grid-now")) == pytest.approx(grid)
    assert float(_value(browser, "#pv-now")) == pytest.approx(-pv)  # production shown positive
    assert float(_value(browser, "#batt-now")) == pytest.approx(batt)
    assert float(_value(browser, "#load-now")) == pytest.approx(grid - dev)
    # today's imported energy: Σ max(p, 0) · 15 min over the PCC samples
    parquet = f"'{run_dir}/sensorthings/observations.parquet'"
    ((imp,),) = duckdb.sql(f"SELECT sum(greatest(result, 0)) * 900 / 3.6e6 FROM {parquet}"
                         f" WHERE datastream = 'fur_skive/load:{HOME}/p_w'").fetchall()
    assert float(_value(browser, '#today b[data-key="import_kwh"]')) == pytest.approx(imp)
    assert _value(browser, '#today b[data-key="bill_eur"]') not in (None, "")
    assert browser.execute_script("return document.querySelectorAll('#history tbody tr').length;") >= 1
    assert browser.execute_script("return document.getElementById('no-alerts') !== null;")
    # fits a phone: nothing wider than the screen
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth;")
    # access rules, asked from the resident's own session
    assert _fetch_status(browser, f"/gui/api/home?site={HOME}") == 200
    assert _fetch_status(browser, f"/gui/api/home?site={OTHER}") == 403
    assert _fetch_status(browser, "/v1.1/Things") == 403
    assert _fetch_status(browser, "/gui/api/tech") == 403
    assert _fetch_status(browser, "/gui/api/sites") == 200
    sites = browser.execute_async_script("const done = arguments[arguments.length - 1];"
                                         "fetch('/gui/api/sites').then(r => r.json()).then(done);")
    assert sites == [HOME]


def test_technical_page_shows_topics_devices_and_broker_rates(server, browser, run_dir):
    _login(browser, server.url + "/gui/tech", "eve", "eve-pw")
    name = "fur_skive/fronius_4006773/p_w"
    assert float(_value(browser, f'#topics tr[data-name="{name}"] td[data-key="value"]')) == pytest.approx(
        _last(run_dir, name))
    assert float(_value(browser, f'#topics tr[data-name="{name}"] td[data-key="age"]')) == 0.0
    published = json.loads((run_dir / "run.json").read_text())["messaging"]["roles"]["data"]["published"]
    cell = browser.execute_script("return document.querySelector(arguments[0]).textContent;",
                                  '#roles tr[data-role="data"] td[data-key="published"]')
    assert int(cell) == published > 0
    assert browser.execute_script("return document.querySelectorAll('#devices tbody tr').length;") >= 3
    assert _fetch_status(browser, "/v1.1/Things") == 200  # an engineer reads the API too


def test_without_login_only_the_pages_and_the_login_answer(server):
    import urllib.error
    import urllib.request

    for path in ("/v1.1/Things", "/gui/api/home?site=" + HOME, "/gui/api/tech"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(server.url + path, timeout=10)
        assert err.value.code == 401, path
    with urllib.request.urlopen(server.url + "/gui/home", timeout=10) as r:
        assert r.status == 200 and b"My home" in r.read()
