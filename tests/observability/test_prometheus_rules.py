"""The Prometheus configuration and alert rules pass promtool; the rules read as runbooks."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from promql_text import ALERTS, PROMETHEUS_CONFIG, REPO, alert_rules

INSTALL_HINT = "run deploy/install-test-deps.sh (Debian package prometheus) first"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(f"promtool is not on PATH; {INSTALL_HINT}")
    return path


def check(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), "check", *map(str, args)], capture_output=True, text=True, timeout=60
    )


def test_promtool_accepts_the_alert_rules():
    result = check("rules", ALERTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_accepts_the_prometheus_config_and_finds_its_rule_file():
    result = check("config", PROMETHEUS_CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout


def test_alerts_cover_down_lag_latency_and_dead_letters():
    names = {rule.name for rule in alert_rules()}
    assert {
        "StreamkmDown",
        "StreamkmConsumerLagGrowing",
        "StreamkmHighLatency",
        "StreamkmDeadLettersHigh",
    } <= names


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r.name)
def test_every_alert_waits_has_a_severity_and_says_what_to_do(rule):
    assert rule.rule.get("for"), "an alert without `for` pages on a single bad scrape"
    assert rule.rule["labels"]["severity"] in ("warning", "critical")
    assert rule.rule["annotations"]["summary"]
    assert rule.rule["annotations"]["description"]


def test_install_script_does_nothing_when_prometheus_is_installed():
    promtool()
    result = subprocess.run(
        ["sh", str(REPO / "deploy" / "install-test-deps.sh")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == result.stderr == ""
