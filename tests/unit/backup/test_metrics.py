"""The backup gauges and the fleet's alerts on them: the textfile promtool accepts, read from
what the node holds (a failed run keeps the last good time); BackupStale fires — in promtool's
own rule tests, on the rendered alerts.yml — once the newest backup is older than its max age."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.backup.metrics import render
from orchestrator.backup.model import Listed, Listing, Manifest
from orchestrator.backup.plan import backup_targets
from orchestrator.backup.run import BackupReport, Outcome
from orchestrator.config.project import load_project

REPO = Path(__file__).resolve().parents[3]
ALERTS = REPO / "compose/oracle/config/prometheus/alerts.yml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian prometheus)")


def report() -> BackupReport:
    targets = {t.service: t for t in backup_targets(load_project(REPO))}
    kept = Manifest(service="postgres", node="oracle", method="pg_dump", id="20261201T010000Z", created=1796000000.0,
                    duration_s=0.5, size=2655, checksum="a" * 64, files={}, version="0.1.0")
    listing = Listing(1796100000.0, {"postgres": (Listed("postgres", kept.id, kept),)})
    outcomes = [Outcome(targets["postgres"], ok=False, error="pg-dump failed"),   # this run failed ...
                Outcome(targets["redis"], ok=True)]
    return BackupReport("20261202T010000Z", outcomes, {"oracle": listing}, 1.0, finished_at=1796100001.0)


def test_the_gauges_keep_the_last_good_backup_of_a_failed_run() -> None:
    text = render(report())
    labels = '{service="postgres",node="oracle",method="pg_dump"}'
    assert f"swarm_backup_last_success_timestamp_seconds{labels} 1796000000" in text  # ... the last good one stays
    assert f"swarm_backup_last_run_success{labels} 0" in text
    assert f"swarm_backup_size_bytes{labels} 2655" in text and f"swarm_backup_max_age_seconds{labels} 93600" in text
    redis = '{service="redis",node="oracle",method="redis-rdb"}'
    assert f"swarm_backup_last_success_timestamp_seconds{redis} 0" in text  # none on the node: stale at once


def test_a_node_that_did_not_answer_reports_only_what_the_run_knows() -> None:
    text = render(replace(report(), listings={}))
    assert "swarm_backup_last_success_timestamp_seconds{" not in text
    assert 'swarm_backup_last_run_success{service="redis",node="oracle",method="redis-rdb"} 1' in text


@needs_promtool
def test_promtool_accepts_the_textfile() -> None:
    done = subprocess.run([str(PROMTOOL), "check", "metrics"], input=render(report()), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_the_stale_backup_alert_fires_after_max_age_and_not_before(tmp_path: Path) -> None:
    (tmp_path / "alerts.yml").write_text(ALERTS.read_text())
    labels = 'service="postgres",node="oracle",method="pg_dump"'
    (tmp_path / "test.yml").write_text(textwrap.dedent(f"""\
        rule_files: [alerts.yml]
        evaluation_interval: 1m
        tests:
          - interval: 1m
            input_series:
              - series: 'swarm_backup_last_success_timestamp_seconds{{{labels}}}'
                values: '3600x300'
              - series: 'swarm_backup_max_age_seconds{{{labels}}}'
                values: '7200x300'
              - series: 'swarm_backup_last_run_success{{{labels}}}'
                values: '1x60 0x240'
            alert_rule_test:
              - {{eval_time: 2h, alertname: BackupStale, exp_alerts: []}}
              - eval_time: 4h
                alertname: BackupStale
                exp_alerts:
                  - exp_labels: {{{labels.replace('=', ': ')}, severity: warning}}
                    exp_annotations:
                      summary: "no recent backup of postgres on oracle"
                      description: "its newest backup is older than backup_max_age: run `swarm backup --service postgres` and look at the backup timer"
              - {{eval_time: 50m, alertname: BackupFailing, exp_alerts: []}}
              - eval_time: 2h
                alertname: BackupFailing
                exp_alerts:
                  - exp_labels: {{{labels.replace('=', ': ')}, severity: warning}}
                    exp_annotations:
                      summary: "the last swarm backup of postgres on oracle failed"
        """))
    done = subprocess.run([str(PROMTOOL), "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
