"""The dashboard in a real headless Chromium against a live server with generated data."""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import cast

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models import Max
from django.test import Client
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from kpis.models import CellUniqueUsers, IntervalLedger, IntervalType, ServiceTrafficVolume
from kpis.sampledata import file_name
from kpis.tests.conftest import GeneratedData, shipped_assets, utc

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# No first-run, sync or update traffic: the machine may have no network at all.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1500",
    # A locale whose date inputs would show a 12-hour clock ("01:05 PM").
    "--lang=en-US",
]
# The screenshot lands in data/ (ignored by git); `KPI_SCREENSHOT=docs/dashboard.png make test`
# refreshes the one the README and docs/api.md show.
SCREENSHOT = Path(settings.BASE_DIR) / os.environ.get("KPI_SCREENSHOT", "data/dashboard.png")
PASSWORD = "dashboard-test-password-1"
KPI_MODELS = {1: ServiceTrafficVolume, 2: CellUniqueUsers}


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if shutil.which(path) is None]
    if missing:
        pytest.fail(f"{missing} not found: apt-get install chromium chromium-driver")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def operator(transactional_db: None) -> str:
    get_user_model().objects.create_superuser("ops", "ops@example.org", PASSWORD)
    return "ops"


def log_in(driver: WebDriver, base_url: str, username: str) -> None:
    driver.get(base_url + "/")
    assert "/admin/login/" in driver.current_url
    driver.find_element(By.ID, "id_username").send_keys(username)
    driver.find_element(By.ID, "id_password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(driver, 30).until(lambda d: d.current_url == base_url + "/")


def page_state(driver: WebDriver) -> dict[str, str]:
    """The dashboard's state, read in one script call so that no element can go stale."""
    return dict(
        driver.execute_script(
            "return {state: document.body.dataset.state || '', "
            "loads: document.body.dataset.loads || '0', "
            "status: document.getElementById('status').textContent};"
        )
    )


def wait_for_load(driver: WebDriver, count: int) -> None:
    def loaded(d: WebDriver) -> bool:
        state = page_state(d)
        if state["state"] == "error":
            raise AssertionError(state["status"])
        return state["state"] == "ready" and state["loads"] == str(count)

    WebDriverWait(driver, 30).until(loaded)


def drawn_points(driver: WebDriver, kpi_id: int) -> int:
    """The rows Chart.js laid out on the KPI's canvas (0 when there is no chart).

    Each row is a segment over its interval: the point at its start is counted.
    """
    return int(
        driver.execute_script(
            """
            const chart = Chart.getChart(document.getElementById(arguments[0]));
            if (!chart) return 0;
            return chart.data.datasets
                .map((dataset, index) => {
                    const laidOut = chart.getDatasetMeta(index).data;
                    return dataset.data.filter(
                        (point, at) => point.edge === "start" && !laidOut[at].skip
                    ).length;
                })
                .reduce((a, b) => a + b, 0);
            """,
            f"chart-kpi-{kpi_id}",
        )
    )


def drawn_segments(driver: WebDriver, kpi_id: int) -> dict[str, list[list[float]]]:
    """Per line of the KPI's chart: each row as [start, end, start px, end px, level, key].

    ``level`` says the segment is flat: its end point holds the row's value too.
    """
    return dict(
        driver.execute_script(
            """
            const chart = Chart.getChart(document.getElementById(arguments[0]));
            const segments = {};
            chart.data.datasets.forEach((dataset, index) => {
                const laidOut = chart.getDatasetMeta(index).data;
                segments[dataset.label] = [];
                dataset.data.forEach((point, at) => {
                    if (point.edge !== "start") return;
                    const end = dataset.data[at + 1];
                    const level = end.edge === "end" && end.y === point.y;
                    segments[dataset.label].push(
                        [point.start, point.end, laidOut[at].x, laidOut[at + 1].x, level, point.key]
                    );
                });
            });
            return segments;
            """,
            f"chart-kpi-{kpi_id}",
        )
    )


def pixel_of(driver: WebDriver, kpi_id: int, moment: datetime) -> float:
    """Where the KPI chart's time axis puts ``moment``."""
    return float(
        driver.execute_script(
            "return Chart.getChart(document.getElementById(arguments[0]))"
            ".scales.x.getPixelForValue(arguments[1]);",
            f"chart-kpi-{kpi_id}",
            moment.timestamp() * 1000,
        )
    )


def expected_points(kpi_id: int, interval: int, start: datetime, end: datetime) -> int:
    return (
        KPI_MODELS[kpi_id]
        .objects.filter(
            interval=interval, interval_start_timestamp__gte=start, interval_end_timestamp__lte=end
        )
        .count()
    )


def set_range(driver: WebDriver, start: datetime, end: datetime) -> None:
    """Type the range as a person would, in the 24-hour form the inputs show."""
    for element_id, moment in (("range-from", start), ("range-to", end)):
        field = driver.find_element(By.ID, element_id)
        field.clear()
        field.send_keys(f"{moment:%Y-%m-%d %H:%M}")


def console_errors(driver: webdriver.Chrome) -> list[str]:
    """Errors the page logged (a missing favicon of the admin's login page included)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def test_the_dashboard_draws_the_kpis_of_the_chosen_range(
    generated_data: GeneratedData, operator: str, browser: webdriver.Chrome, live_server: object
) -> None:
    latest = IntervalLedger.objects.filter(interval=IntervalType.FIVE_MINUTES).aggregate(
        end=Max("interval_end_timestamp")
    )["end"]
    log_in(browser, live_server.url, operator)  # type: ignore[attr-defined]

    # The default view: the last six hours of five-minute rows, here all of them.
    wait_for_load(browser, 1)
    # 24-hour and UTC, as on the axes, whatever the browser's locale.
    assert browser.find_element(By.ID, "range-from").get_attribute("value") == "2021-07-18 00:00"
    assert browser.find_element(By.ID, "range-to").get_attribute("value") == "2021-07-18 01:30"
    for kpi_id in KPI_MODELS:
        expected = expected_points(kpi_id, 1, latest - timedelta(hours=6), latest)
        assert expected > 0
        assert drawn_points(browser, kpi_id) == expected
    latest_rows = ServiceTrafficVolume.objects.filter(
        interval=1, interval_start_timestamp=latest - timedelta(minutes=5)
    ).order_by("-total_bytes", "service_id")
    expected_services = [str(cast(ServiceTrafficVolume, row).service_id) for row in latest_rows]
    table = browser.find_element(By.ID, "latest-kpi-1").find_elements(By.CSS_SELECTOR, "tbody tr")
    assert [row.find_elements(By.TAG_NAME, "td")[1].text for row in table] == expected_services
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOT))

    # A narrower range of five-minute rows.
    start, end = utc("2021-07-18T00:30"), utc("2021-07-18T01:15")
    set_range(browser, start, end)
    browser.find_element(By.ID, "range-apply").click()
    wait_for_load(browser, 2)
    for kpi_id in KPI_MODELS:
        assert drawn_points(browser, kpi_id) == expected_points(kpi_id, 1, start, end)
    ledger = IntervalLedger.objects.filter(
        interval=1, interval_start_timestamp__gte=start, interval_end_timestamp__lte=end
    )
    complete = sum(entry.is_complete for entry in ledger)
    summary = browser.find_element(By.ID, "completeness-summary").text
    assert summary.startswith(f"{complete} of {ledger.count()} processed intervals complete")

    # Hourly rows over a range that holds both hours.
    start, end = utc("2021-07-17T23:00"), utc("2021-07-18T02:00")
    set_range(browser, start, end)
    Select(browser.find_element(By.ID, "range-interval")).select_by_value("2")
    wait_for_load(browser, 3)
    for kpi_id in KPI_MODELS:
        expected = expected_points(kpi_id, 2, start, end)
        assert expected == 2 * settings.KPI_TOP_N
        assert drawn_points(browser, kpi_id) == expected
        # Each hour is drawn across the whole hour: the last one reaches 02:00.
        segments = [s for line in drawn_segments(browser, kpi_id).values() for s in line]
        assert max(segment[3] for segment in segments) == pytest.approx(
            pixel_of(browser, kpi_id, end), abs=1
        )
        for segment_start, segment_end, left, right, level, _ in segments:
            assert segment_end - segment_start == 3600 * 1000
            assert right - left > 50 and level
    assert console_errors(browser) == []


# Pages an operator opens, each with an element that shows it has rendered.
PAGES_UNDER_THE_POLICY = {
    "/": "#content canvas",
    "/admin/": "#content-main",
    "/admin/kpis/intervalledger/": "#result_list",
    "/admin/axes/accessattempt/": "#changelist",
    "/api/docs/": ".swagger-ui .information-container",
}


def shows(css: str) -> Callable[[WebDriver], bool]:
    """A wait condition: the page has an element matching ``css``."""
    return lambda driver: bool(driver.find_elements(By.CSS_SELECTOR, css))


def test_the_dashboard_admin_and_api_docs_break_no_rule_of_the_content_security_policy(
    generated_data: GeneratedData, operator: str, browser: webdriver.Chrome, live_server: object
) -> None:
    base = live_server.url  # type: ignore[attr-defined]
    policy = Client().get("/admin/login/")["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "default-src 'self'" in policy
    assert "unsafe-inline" not in policy
    log_in(browser, base, operator)
    wait_for_load(browser, 1)
    errors = {"/": console_errors(browser)}

    for path, rendered in PAGES_UNDER_THE_POLICY.items():
        if path == "/":
            continue
        browser.get(base + path)
        WebDriverWait(browser, 30).until(shows(rendered))
        errors[path] = console_errors(browser)

    assert errors == {path: [] for path in PAGES_UNDER_THE_POLICY}


def test_the_dashboard_says_so_when_there_is_no_data(
    operator: str, browser: webdriver.Chrome, live_server: object
) -> None:
    log_in(browser, live_server.url, operator)  # type: ignore[attr-defined]
    WebDriverWait(browser, 30).until(lambda d: page_state(d)["state"] == "empty")
    assert browser.find_element(By.ID, "empty").is_displayed()
    assert "No KPI data yet" in browser.find_element(By.ID, "empty").text
    assert not browser.find_element(By.ID, "content").is_displayed()
    assert drawn_points(browser, 1) == 0
    assert console_errors(browser) == []


@pytest.mark.django_db
def test_anonymous_visitors_are_sent_to_the_admin_login(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/admin/login/?next=/"


@pytest.mark.django_db
def test_the_page_loads_its_scripts_and_styles_from_the_project_only(
    admin_client: Client,
) -> None:
    assets = shipped_assets(admin_client.get("/").content.decode())

    assert {asset.rsplit("/", 1)[1] for asset in assets} == {
        "chart.umd.min.js",
        "dashboard.js",
        "dashboard.css",
        "favicon.svg",
    }


@pytest.mark.django_db
def test_every_page_finds_the_favicon(client: Client) -> None:
    # The admin and the browsable API name no icon: browsers ask for /favicon.ico.
    response = client.get("/favicon.ico")
    assert response.status_code == 302
    icon = response["Location"]
    assert icon == "/" + settings.STATIC_URL.lstrip("/") + "kpis/favicon.svg"
    assert finders.find("kpis/favicon.svg")


def test_a_service_in_the_top_n_only_once_is_a_line_across_its_interval(
    generated_data: GeneratedData, operator: str, browser: webdriver.Chrome, live_server: object
) -> None:
    once = utc("2021-07-18T00:40")
    ServiceTrafficVolume.objects.create(
        interval=IntervalType.FIVE_MINUTES,
        interval_start_timestamp=once,
        interval_end_timestamp=once + timedelta(minutes=5),
        service_id=99,
        total_bytes=1,  # fourth of its interval: the only row of its line (service 99 or top 4)
    )
    log_in(browser, live_server.url, operator)  # type: ignore[attr-defined]
    wait_for_load(browser, 1)

    lone = [line for line in drawn_segments(browser, 1).values() if line[0][5] == 99]
    [[(start, end, left, right, level, _)]] = lone
    assert (start, end) == (
        once.timestamp() * 1000,
        (once + timedelta(minutes=5)).timestamp() * 1000,
    )
    # Five minutes of a 90-minute axis on a 1280 px window: a line of tens of pixels.
    assert right - left > 20
    assert level
    assert left == pytest.approx(pixel_of(browser, 1, once), abs=1)


# The read-only admin lists an operator opens most, with their widest content.
ADMIN_LISTS = [
    "/admin/kpis/inputfilerecord/",
    "/admin/kpis/intervalledger/",
    "/admin/kpis/servicetrafficvolume/",
    "/admin/kpis/celluniqueusers/",
    "/admin/kpis/updaterun/",
]


def test_the_admin_lists_fit_a_1400_pixel_window(
    generated_data: GeneratedData, operator: str, browser: webdriver.Chrome, live_server: object
) -> None:
    log_in(browser, live_server.url, operator)  # type: ignore[attr-defined]
    browser.set_window_size(1400, 1000)
    cut_off = {}
    for path in ADMIN_LISTS:
        browser.get(live_server.url + path)  # type: ignore[attr-defined]
        WebDriverWait(browser, 30).until(shows("#result_list"))
        widths = browser.execute_script(
            "const results = document.querySelector('#changelist .results');"
            "return [results.scrollWidth, results.clientWidth];"
        )
        if widths[0] > widths[1]:
            cut_off[path] = widths
    assert cut_off == {}
    assert console_errors(browser) == []


def test_the_completeness_strip_shows_files_too_late(
    generated_data: GeneratedData, operator: str, browser: webdriver.Chrome, live_server: object
) -> None:
    late = Path(generated_data.input_dir) / file_name(
        interval_start=utc("2021-07-18T00:10"), part=9
    )
    late.write_bytes(b"msisdn,cell_id,service_id,bytes_uplink,bytes_downlink\n4917,1,1,1,1\n")
    with pytest.raises(CommandError):  # too late: the hour is final three days later
        call_command(
            "update_network_stats",
            *("--now", "2021-07-22T00:00Z", "--input-dir", str(generated_data.input_dir)),
            stdout=io.StringIO(),
            stderr=io.StringIO(),
        )
    log_in(browser, live_server.url, operator)  # type: ignore[attr-defined]

    wait_for_load(browser, 1)

    summary = browser.find_element(By.ID, "completeness-summary").text
    assert summary.endswith("1 with files too late (counted nowhere until restated).")
    slots = browser.find_elements(By.CSS_SELECTOR, "#completeness .slot.late")
    assert len(slots) == 1
    title = slots[0].get_attribute("title") or ""
    assert title.startswith("2021-07-18T00:10")
    assert "1 too late" in title
    assert "final (late files are not merged)" in title
