"""The monitor's dashboard in a real headless Chromium against the real service (`lmadapt monitor serve` in a
subprocess on a loopback port) over a store filled through Monitor.ingest: the charts drawn by plotly with one point
per stored window and the alerts as markers, the open alerts, the period-over-period table, the latest items filtered
by topic and label, the API key asked for and used; nothing loaded from outside the service, no console error; a
screenshot kept in the test's folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from lmadapt.apps.monitor.store import MonitorStore, aggregates, alerts, items
from tests.conftest import REPO
from tests.unit.test_monitor import sentiment_run  # noqa: F401 (a fixture)
from tests.unit.test_monitor_service import fill
from tests.unit.test_support_page import (  # noqa: F401 (browser: a fixture)
    Visit,
    assert_stayed_on_the_service,
    browser,
    free_port,
)

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips, saying how to install it
    expect = None

API_KEY = "dash-k3y"


@pytest.fixture(scope="module")
def services(sentiment_run, tmp_path_factory):  # noqa: F811
    """The monitor served twice by `lmadapt monitor serve` on loopback ports over one filled store, without a key
    ("open") and with API_KEY ("keyed"): each one's URL, and the config."""
    import dataclasses

    from lmadapt.serving.app import wait_until_serving

    work = tmp_path_factory.mktemp("monitor-page")
    config, _rows = fill(sentiment_run, work)
    env = os.environ | {"PYTHONPATH": str(REPO / "src"), "LMADAPT_HOME": str(work / "home"), "HF_HUB_OFFLINE": "1"}
    recipe = work / "monitor.yaml"
    recipe.write_text(yaml.safe_dump(dataclasses.asdict(config)), encoding="utf-8")
    started = {}
    for name, key in (("open", []), ("keyed", ["--api-key", API_KEY])):
        port = free_port()
        command = [sys.executable, "-m", "lmadapt.cli", "monitor", "serve", str(recipe), "--port", str(port), *key]
        started[name] = (f"http://127.0.0.1:{port}", subprocess.Popen(command, cwd=REPO, env=env))
    try:
        for url, process in started.values():
            wait_until_serving(url, process, timeout_s=60)
        yield {name: url for name, (url, _) in started.items()}, config
    finally:
        for _, process in started.values():
            process.terminate()
        for _, process in started.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def open_dashboard(browser, url: str) -> Visit:  # noqa: F811
    """The dashboard in a fresh browser context (its own sessionStorage), recording requests and errors."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    visited = Visit(context.new_page())
    visited.page.on("request", lambda request: visited.requests.append(request.url))
    visited.page.on("console", lambda message: message.type == "error" and visited.errors.append(message.text))
    visited.page.on("pageerror", lambda error: visited.errors.append(str(error)))
    visited.page.goto(url + "/")
    return visited


def stored_counts(config) -> dict:
    with MonitorStore(config.store_url) as store, store.database.reading() as conn:
        windows = conn.execute(
            sa.select(sa.func.count(sa.distinct(aggregates.c.start))).where(aggregates.c.window == "1h")
        ).scalar()
        firing = conn.execute(
            sa.select(sa.func.count()).where(alerts.c.window == "1h", alerts.c.status == "firing")
        ).scalar()
        negative_a = conn.execute(
            sa.select(items.c.id)
            .where(items.c.topic == "a", items.c.sentiment == "negative")
            .order_by(items.c.time.desc(), items.c.id.desc())
        ).scalars()
        return {"windows": windows, "firing": firing, "negative_a": list(negative_a)}


def test_the_dashboard_draws_the_stored_windows_and_filters_the_latest_items(browser, services, tmp_path):  # noqa: F811
    urls, config = services
    expected = stored_counts(config)
    assert expected["windows"] == 48 and expected["firing"] == 2
    visited = open_dashboard(browser, urls["open"])
    page = visited.page
    expect(page.locator("body")).to_have_attribute("data-loaded", "true")
    expect(page.locator("#monitor-name")).to_have_text(config.name)

    # plotly drew both charts as SVG, one point per stored window; the fired alerts are markers on the trend
    share = page.locator("#share-chart")
    expect(share.locator("svg.main-svg").first).to_be_visible()
    expect(share).to_have_attribute("data-points", str(expected["windows"]))
    traces = share.locator(".scatterlayer .trace")
    expect(traces).to_have_count(6)
    expect(traces.nth(3).locator(".point")).to_have_count(expected["windows"])  # the negative share
    expect(traces.nth(4).locator(".point")).to_have_count(expected["firing"])  # the alerts that fired
    expect(page.locator("#volume-chart .barlayer .point")).to_have_count(expected["windows"])
    heights = page.locator("#volume-chart .barlayer .point path").evaluate_all(
        "paths => paths.map(p => p.getBBox().height)"
    )
    assert min(heights) > 0  # every window holds items (60 an hour)

    # one topic's trend
    page.select_option("#topic", "a")
    expect(traces.nth(4).locator(".point")).to_have_count(1)  # a's alert only
    expect(traces.nth(3).locator(".point")).to_have_count(expected["windows"])

    # the open alert (topic a's surge runs to the end) and the period-over-period table
    expect(page.locator("#open-alerts tr.alert")).to_have_count(1)
    expect(page.locator("#open-alerts tr.alert td").nth(2)).to_have_text("a")
    expect(page.locator("#changes tr.change")).to_have_count(3)
    expect(page.locator("#changes-window")).to_have_text("latest 1h against the one before")
    page.select_option("#window", "1d")  # the table and the charts follow the window chosen
    expect(page.locator("#changes-window")).to_have_text("latest 1d against the one before")
    expect(share).to_have_attribute("data-points", "2")
    a_day = page.locator("#changes tr.change").nth(1).locator("td")
    expect(a_day.nth(0)).to_have_text("a")
    expect(a_day.nth(1)).to_have_text("2026-03-03 00:00")
    expect(a_day.nth(2)).to_have_text("720")  # 30 items an hour
    expect(a_day.nth(3)).to_have_text("720")

    # the latest items, then filtered by topic and label
    rows = page.locator("#items tr.item")
    expect(rows).to_have_count(50)
    page.select_option("#item-topic", "a")
    page.select_option("#item-label", "negative")
    expect(page.locator("#items")).to_have_attribute("data-filter", "topic=a&label=negative")
    expect(rows).to_have_count(min(50, len(expected["negative_a"])))
    assert set(rows.locator(".item-topic").all_text_contents()) == {"a"}
    assert set(rows.locator(".item-label").all_text_contents()) == {"negative"}
    shown = [int(i) for i in rows.evaluate_all("rows => rows.map(row => row.dataset.id)")]
    assert shown == expected["negative_a"][:50]
    page.select_option("#item-label", "positive")
    expect(page.locator("#items")).to_have_attribute("data-filter", "topic=a&label=positive")
    assert set(rows.locator(".item-label").all_text_contents()) == {"positive"}

    page.select_option("#window", "1h")
    expect(share).to_have_attribute("data-points", str(expected["windows"]))
    screenshot = Path(tmp_path) / "monitor-dashboard.png"
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"dashboard screenshot: {screenshot}")
    assert screenshot.stat().st_size > 10_000
    assert any(request.endswith("/static/plotly.min.js") for request in visited.requests)
    assert_stayed_on_the_service(visited)
    assert visited.errors == []
    page.context.close()


def test_a_keyed_monitor_asks_for_the_key_then_draws_with_it(browser, services):  # noqa: F811
    urls, config = services
    visited = open_dashboard(browser, urls["keyed"])
    page = visited.page
    error = page.locator("#error")
    expect(error).to_be_visible()
    expect(error.locator(".error-message")).to_contain_text("needs an API key")
    expect(error.locator(".error-message")).to_contain_text("Enter the API key above")
    expect(error.locator(".error-fix")).to_contain_text("X-API-Key")
    expect(page.locator("#items tr.item")).to_have_count(0)

    page.fill("#api-key", "wrong")
    page.click("#use-key")
    expect(error.locator(".error-message")).to_contain_text("missing or wrong API key")

    page.fill("#api-key", API_KEY)
    page.click("#use-key")
    expect(page.locator("body")).to_have_attribute("data-loaded", "true")
    expect(error).to_be_hidden()
    expect(page.locator("#monitor-name")).to_have_text(config.name)
    expect(page.locator("#share-chart")).to_have_attribute("data-points", str(stored_counts(config)["windows"]))
    expect(page.locator("#items tr.item")).to_have_count(50)
    assert page.evaluate("Object.values(sessionStorage)") == [API_KEY]
    assert_stayed_on_the_service(visited)
    assert visited.errors and all("401" in message for message in visited.errors)  # only the refusals
    page.context.close()
