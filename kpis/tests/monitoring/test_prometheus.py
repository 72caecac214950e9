"""What Prometheus' own tool says: the live /metrics, the scrape job and the alert rules.

``promtool`` comes with Debian's ``prometheus`` package (``make test`` installs it). Any
line it prints is a finding: a warning fails the test as an error does.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings

from kpis.tests.conftest import LiveApi

DEPLOY = Path(settings.BASE_DIR) / "deploy"
SCRAPE_CONFIG = DEPLOY / "prometheus.yml"
ALERT_RULES = DEPLOY / "network-analysis-alerts.yml"


def promtool(*args: str, stdin: str | None = None, cwd: Path | None = None) -> tuple[int, str]:
    """Run promtool; its exit code and everything it printed."""
    if shutil.which("promtool") is None:
        pytest.fail("promtool not found: apt-get install prometheus (scripts/os-packages.sh)")
    result = subprocess.run(
        ["promtool", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )
    return result.returncode, result.stdout + result.stderr


def test_promtool_finds_nothing_to_say_about_a_live_scrape(live_api: LiveApi) -> None:
    request = urllib.request.Request(
        f"{live_api.url}/metrics", headers={"Authorization": f"Bearer {live_api.token}"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        exposition = response.read().decode()
    # Every family is there: the generated data has counted, failed and duplicate files.
    assert 'status="failed"} 1.0' in exposition and "kpi_update_last_run_end" in exposition

    code, output = promtool("check", "metrics", stdin=exposition)

    assert (code, output) == (0, "")


def test_the_scrape_job_and_its_alert_rules_pass_promtool(tmp_path: Path) -> None:
    # promtool checks that the token file exists: the job is checked with one in a test folder.
    token = tmp_path / "network-analysis.token"
    token.write_text("a-token\n")
    config = SCRAPE_CONFIG.read_text()
    assert "/etc/prometheus/network-analysis.token" in config
    (tmp_path / SCRAPE_CONFIG.name).write_text(
        config.replace("/etc/prometheus/network-analysis.token", str(token))
    )
    shutil.copy(ALERT_RULES, tmp_path / ALERT_RULES.name)

    config_code, config_output = promtool(
        "check", "config", "--lint=all", "--lint-fatal", SCRAPE_CONFIG.name, cwd=tmp_path
    )
    rules_code, rules_output = promtool(
        "check", "rules", "--lint=all", "--lint-fatal", ALERT_RULES.name, cwd=tmp_path
    )

    assert config_code == 0, config_output
    # The rule file the config names is checked with it.
    assert "SUCCESS: 2 rules found" in config_output, config_output
    assert rules_code == 0, rules_output
    assert "SUCCESS: 2 rules found" in rules_output, rules_output
    assert "WARNING" not in config_output + rules_output


@pytest.mark.parametrize("deployed", [SCRAPE_CONFIG, ALERT_RULES], ids=lambda path: path.name)
def test_the_documentation_shows_the_checked_files(deployed: Path) -> None:
    pages = [
        Path(settings.BASE_DIR) / "README.md",
        *(Path(settings.BASE_DIR) / "docs").glob("*.md"),
    ]
    blocks = [
        block
        for page in pages
        for block in re.findall(r"```yaml\n(.*?)```", page.read_text(), re.DOTALL)
    ]
    assert deployed.read_text() in blocks, f"no page shows {deployed.name} as it is"
