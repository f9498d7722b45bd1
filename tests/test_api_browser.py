"""The Professional GUI in a real headless browser (chromium + chromedriver via selenium): load a grid, see it as a
single-line view, run its simulation and see the buses coloured by the thresholds (the critical ones red, the same
ones the API names), then set up a study from a base scenario's template, launch it and watch it reach the end,
with its table, plot and downloads. Skipped, with the reason, only when the browser, its driver or selenium is
not installed."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from cosim.api.app import create_api_app
from cosim.api.jobs import Registry
from cosim.sta.server import HttpServer
from tests.test_monitor_browser import _browser

REPO = Path(__file__).resolve().parents[1]
FUR = REPO / "scenarios" / "data" / "s4g" / "fur_feeder.json"


@pytest.fixture
def server(tmp_path):
    reg = Registry(folder=tmp_path / "api", scenario_roots=[REPO / "tests" / "study_data", REPO / "scenarios"])
    with HttpServer(create_api_app(reg)) as srv:
        yield srv
    reg.close()


@pytest.fixture
def browser(tmp_path):
    b = _browser(tmp_path)
    b.set_window_size(1280, 900)
    yield b
    b.quit()


def _js(browser, script, *args):
    return browser.execute_script(script, *args)


def test_grid_simulation_and_study_in_the_browser(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser.get(server.url + "/")
    wait = WebDriverWait(browser, 120, poll_frequency=0.1)
    wait.until(lambda b: _js(b, "return document.body.dataset.ready === '1';"))

    # load a grid: the single-line view shows every bus, uncoloured before a run
    browser.find_element(By.ID, "grid-file").send_keys(str(FUR))
    wait.until(lambda b: _js(b, "return document.querySelectorAll('#sld circle.bus').length;") == 56)
    gid = _js(browser, "return document.getElementById('grid-info').dataset.grid;")
    assert _js(browser, "return document.querySelectorAll('#sld circle.none').length;") == 56
    assert _js(browser, "return document.querySelectorAll('#sld line.trafo').length;") == 1

    # run it: the buses take the colours of their level, the critical ones red, as the API says
    browser.find_element(By.ID, "duration").clear()
    browser.find_element(By.ID, "duration").send_keys("2")
    browser.find_element(By.ID, "run").click()
    wait.until(lambda b: _js(b, "return document.body.dataset.sim;") == "done")
    wait.until(lambda b: _js(b, "return document.body.dataset.critical !== undefined;"))
    result = httpx.get(f"{server.url}/se/simulation/{gid}").json()
    red = _js(browser, "return [...document.querySelectorAll('#sld circle[data-level=high]')].map(c => c.dataset.bus);")
    assert sorted(red) == sorted(result["critical_nodes"]) and red
    assert _js(browser, "return document.querySelectorAll('#sld circle.none').length;") == 0
    fill = _js(browser, "return getComputedStyle(document.querySelector('#sld circle[data-level=high]')).fill;")
    assert fill == "rgb(214, 40, 40)"
    assert _js(browser, "return document.getElementById('sim-progress').value;") == 100
    assert _js(browser, "return document.querySelectorAll('#sim-plot .scatterlayer .trace').length;") >= 2
    results_url = _js(browser, "return document.getElementById('dl-results').href;")
    assert httpx.get(results_url).json()["critical_nodes"] == result["critical_nodes"]

    # a study from a base scenario's template: launched, followed to the end, compared in a table and a plot
    Select(browser.find_element(By.ID, "scenario")).select_by_value("tiny.yaml")
    browser.find_element(By.ID, "template").click()
    wait.until(lambda b: "path: tiny.yaml" in _js(b, "return document.getElementById('study-text').value;"))
    text = _js(browser, "return document.getElementById('study-text').value;")
    assert "key: variant, values: [idle]" in text and "libal (libal)" in text  # from the scenario itself
    browser.find_element(By.ID, "launch").click()
    wait.until(lambda b: _js(b, "return document.body.dataset.study;") in ("complete", "failed", "interrupted"))
    assert _js(browser, "return document.body.dataset.study;") == "complete", \
        _js(browser, "return document.getElementById('study-error').textContent;")
    assert _js(browser, "return document.getElementById('study-progress').value;") == 100
    assert _js(browser, "return document.querySelectorAll('#study-table tbody tr').length;") == 2
    assert _js(browser, "return document.querySelectorAll('#study-plot .scatterlayer .trace').length;") >= 1
    csv = _js(browser, "return document.getElementById('dl-csv').href;")
    assert httpx.get(csv).text.count("\n") == 3  # header + two variants
