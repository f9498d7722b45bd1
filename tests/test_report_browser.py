"""The report in a real headless browser (Debian's chromium + chromedriver, driven by selenium): every figure is
drawn by plotly offline (the page is opened from a file, the network is off), the key figures the page shows equal
kpis.json, and the EV section says how much energy was not delivered. Skipped, with the reason, only when the
browser, its driver or selenium is not installed (.ci/run installs chromium and chromium-driver).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cosim import kpi, kpi_format, report
from tests.test_monitor_browser import _browser
from tests.test_report import EVENTS, SESSIONS, write_run


@pytest.fixture
def page(tmp_path: Path):
    run_dir = write_run(tmp_path / "run", "complete")
    (run_dir / "sessions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in SESSIONS))
    (run_dir / "events.jsonl").write_text("".join(json.dumps(r) + "\n" for r in EVENTS))
    path = report.render(run_dir)
    browser = _browser(tmp_path)
    try:
        browser.set_network_conditions(offline=True, latency=0, download_throughput=0, upload_throughput=0)
    except Exception:  # not every driver offers it; the page fetches nothing either way
        pass
    try:
        browser.set_window_size(1300, 1000)
        browser.get(path.as_uri())
        yield browser, run_dir
    finally:
        browser.quit()


def test_report_renders_offline_and_shows_the_kpis_of_kpis_json(page) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    browser, run_dir = page
    wait = WebDriverWait(browser, 60, poll_frequency=0.2)
    # every plot div became a drawn plotly figure (an SVG with axes), with plotly.js from the page itself
    wait.until(lambda b: b.execute_script(
        "const d = document.querySelectorAll('div.plotly-graph-div');"
        "return d.length > 0 && [...d].every(x => x.querySelector('svg.main-svg') !== null);"))
    n_plots = browser.execute_script("return document.querySelectorAll('div.plotly-graph-div').length;")
    assert n_plots >= 10
    assert browser.execute_script("return typeof Plotly === 'object' && document.querySelectorAll('.xtick').length "
                                  "> 0;")

    flat = kpi.flatten(kpi.read(run_dir))
    shown = browser.execute_script(
        "return [...document.querySelectorAll('tr[data-kpi]')].map(r => [r.dataset.kpi, r.dataset.value,"
        " r.cells[0].innerText, r.cells[1].innerText, r.cells[2].innerText]);")
    assert len(shown) >= 15
    for key, raw, label, value, unit in shown:
        assert json.loads(raw) == flat[key], key
        assert value.strip() == kpi_format.fmt(key, flat[key]), key
        assert label.strip() == kpi_format.label(key)
        assert unit.strip() == kpi_format.display_unit(key)
    # what an engineer reads first about the EVs, as the browser shows it
    ev = browser.execute_script("return document.getElementById('ev').innerText;")
    assert "7.0 of 17.0 kWh requested were not delivered (41 %)" in ev
    assert browser.execute_script("return document.getElementById('status').innerText;") == "complete"
    # the footer's link leads to the definitions inside the page
    browser.execute_script("document.querySelector('footer a').click();")
    assert browser.execute_script("return location.hash;") == "#definitions"
