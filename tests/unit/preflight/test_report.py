"""The preflight result model and its renderers, with hostile names and messages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from orchestrator.errors import InputError
from orchestrator.preflight.report import (
    CheckResult,
    Report,
    prometheus_label,
    render,
    render_json,
    render_junit,
    render_prometheus,
    render_text,
    write_atomic,
)
from orchestrator.secrets import Secret

HOSTILE = 'x"; rm -rf / <b>&amp;</b>\nsecond line \x1b[31mred\x00 \u202eevil ünïcødé 日本'


def sample() -> Report:
    return Report.of(
        [
            CheckResult("ssh", "login", "oracle", "pass", "logged in as swarm", None, 0.12),
            CheckResult(
                "image-platform",
                "vllm/vllm-openai:v0.6.3",
                "oracle",
                "fail",
                "no linux/arm64 manifest; offered: linux/amd64",
                "pick an arm64 image or move the service to an amd64 node",
                0.4,
            ),
            CheckResult("gpu-thermal", "GPU 0", "starlord", "warn", "temperature not reported"),
            CheckResult("gpu-thermal", "GPU 0", "thanos", "pass", "GPU 0 at 41 °C (limit 85 °C)"),
            CheckResult("vault-secret", "litellm/master_key", None, "pass", "exists"),
        ],
        finished_at=1_700_000_000.5,
        duration_s=2.25,
    )


def hostile() -> Report:
    return Report.of(
        [
            CheckResult(HOSTILE, HOSTILE, HOSTILE, "fail", HOSTILE, HOSTILE, 1.0),
            CheckResult("lone", "surrogate \udc80", "n1", "warn", "bad \ud800 text"),
        ],
        finished_at=1_700_000_000.0,
    )


# --- model -------------------------------------------------------------------------------


def test_status_is_validated() -> None:
    with pytest.raises(ValueError, match="status"):
        CheckResult("c", "s", None, "ok", "m")  # type: ignore[arg-type]


def test_failed_warned_and_exit_codes() -> None:
    report = sample()
    assert [r.check for r in report.failed] == ["image-platform"]
    assert len(report.warned) == 1 and len(report.passed) == 3
    assert report.exit_code() == 1 and report.exit_code(strict=True) == 1
    only_warn = Report.of([r for r in report.results if r.status != "fail"])
    assert only_warn.exit_code() == 0
    assert only_warn.exit_code(strict=True) == 1
    assert Report.of([]).exit_code(strict=True) == 0


def test_by_node_keeps_first_seen_order_and_groups_fleet_checks() -> None:
    assert list(sample().by_node()) == ["oracle", "starlord", "thanos", "fleet"]


def test_render_dispatch() -> None:
    assert render(sample(), "json").startswith("{")
    with pytest.raises(InputError, match="--output 'yaml'"):
        render(sample(), "yaml")


# --- text ----------------------------------------------------------------------------------


def test_text_groups_per_node_aligns_and_summarises() -> None:
    text = render_text(sample())
    lines = text.splitlines()
    assert lines[0] == "oracle"
    oracle_rows = lines[1:3]
    # message column starts at the same place on every row of a node
    starts = {oracle_rows[0].index("logged"), oracle_rows[1].index("no linux/arm64")}
    assert len(starts) == 1, oracle_rows
    assert "  FAIL  image-platform  vllm/vllm-openai:v0.6.3  no linux/arm64" in text
    hint_line = next(line for line in lines if "hint:" in line)
    assert hint_line.index("hint:") == starts.pop()
    assert lines[-1] == "preflight: 3 passed, 1 warning(s), 1 failed in 2.2s"


def test_text_never_lets_control_characters_through() -> None:
    text = render_text(hostile())
    assert "\x1b" not in text and "\x00" not in text and "\u202e" not in text
    assert "\\x1b[31mred\\x00" in text and "\\u202e" in text
    assert "ünïcødé 日本" in text
    # a newline inside a message becomes an indented continuation line, not a fake row
    second = next(line for line in text.splitlines() if line.lstrip().startswith("second line"))
    assert second.startswith(" " * 10)
    text.encode("utf-8")  # lone surrogates were escaped


# --- JSON -----------------------------------------------------------------------------------


def test_json_is_one_object_with_summary_and_results() -> None:
    document = json.loads(render_json(sample()))
    assert document["ok"] is False and document["exit_code"] == 1
    assert document["summary"] == {"pass": 3, "warn": 1, "fail": 1, "total": 5}
    assert document["finished_at"] == "2023-11-14T22:13:20+00:00"
    assert document["results"][1] == {
        "check": "image-platform",
        "subject": "vllm/vllm-openai:v0.6.3",
        "node": "oracle",
        "status": "fail",
        "message": "no linux/arm64 manifest; offered: linux/amd64",
        "hint": "pick an arm64 image or move the service to an amd64 node",
        "duration_s": 0.4,
    }


def test_json_round_trips_hostile_text() -> None:
    text = render_json(hostile())
    text.encode("utf-8")
    document = json.loads(text)
    assert document["results"][0]["message"] == HOSTILE
    assert document["results"][0]["node"] == HOSTILE


# --- JUnit ----------------------------------------------------------------------------------


def test_junit_parses_with_the_right_counts() -> None:
    root = ET.fromstring(render_junit(sample()))
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("5", "1", "0")
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["oracle", "starlord", "thanos", "fleet"]
    assert [s.get("tests") for s in suites] == ["2", "1", "1", "1"]
    cases = root.findall(".//testcase")
    assert len(cases) == 5
    assert {c.get("classname") for c in cases} == {"oracle", "starlord", "thanos", "fleet"}
    failures = root.findall(".//failure")
    assert len(failures) == 1
    assert failures[0].get("message") == "no linux/arm64 manifest; offered: linux/amd64"
    assert "hint: pick an arm64 image" in (failures[0].text or "")
    warn = root.find(".//testcase[@classname='starlord']/system-out")
    assert warn is not None and (warn.text or "").startswith("WARN: temperature not reported")


def test_junit_stays_valid_xml_with_hostile_text() -> None:
    root = ET.fromstring(render_junit(hostile()).encode("utf-8"))
    case = root.find(".//testcase")
    assert case is not None
    failure = case.find("failure")
    assert failure is not None
    message = failure.get("message") or ""
    assert "<b>&amp;</b>" in message and '"' in message and "\n" in message
    assert "\\x1b" in message and "\\x00" in message  # invalid XML chars made visible
    assert "ünïcødé 日本" in message
    assert root.get("failures") == "1"


# --- Prometheus -----------------------------------------------------------------------------


def test_prometheus_gauges() -> None:
    text = render_prometheus(sample())
    lines = text.splitlines()
    assert "# TYPE swarm_preflight_check gauge" in lines
    assert (
        'swarm_preflight_check{node="oracle",check="image-platform",'
        'subject="vllm/vllm-openai:v0.6.3"} 0' in lines
    )
    assert 'swarm_preflight_check{node="oracle",check="ssh",subject="login"} 1' in lines
    assert 'swarm_preflight_check{node="starlord",check="gpu-thermal",subject="GPU 0"} 0.5' in lines
    assert (
        'swarm_preflight_check{node="",check="vault-secret",subject="litellm/master_key"} 1'
        in lines
    )
    assert 'swarm_preflight_checks{status="fail"} 1' in lines
    assert "swarm_preflight_last_run_timestamp_seconds 1700000000.500" in lines
    assert text.endswith("\n")


def test_prometheus_label_escaping() -> None:
    assert prometheus_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    assert prometheus_label("tab\there\x1b") == "tab\ufffdhere\ufffd"
    assert prometheus_label("日本 ü") == "日本 ü"


def test_prometheus_keeps_one_sample_per_series_worst_wins() -> None:
    report = Report.of(
        [
            CheckResult("port", "8000", "starlord", "pass", "free"),
            CheckResult("port", "8000", "starlord", "fail", "taken"),
            CheckResult("port", "8000", "starlord", "warn", "odd"),
        ]
    )
    samples = [
        line
        for line in render_prometheus(report).splitlines()
        if line.startswith("swarm_preflight_check{")
    ]
    assert samples == ['swarm_preflight_check{node="starlord",check="port",subject="8000"} 0']


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
@pytest.mark.parametrize("report", [sample(), hostile()], ids=["sample", "hostile"])
def test_promtool_accepts_the_exposition(report: Report) -> None:
    text = render_prometheus(report)
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=text.encode(), capture_output=True, timeout=30
    )
    assert checked.returncode == 0, checked.stderr.decode() + checked.stdout.decode()


# --- secrets and atomic writes ----------------------------------------------------------------


def test_every_renderer_scrubs_known_secrets() -> None:
    secret = Secret("sk-live-0123456789", "litellm_master_key")
    leaky = Report.of(
        [CheckResult("secret", "k", "oracle", "fail", f"value was {secret.reveal()}", None)]
    )
    for output in ("text", "json", "junit", "prometheus"):
        assert "sk-live-0123456789" not in render(leaky, output)


def test_write_atomic_replaces_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "swarm_preflight.prom"
    write_atomic(target, "one\n")
    write_atomic(target, "two ✓\n")
    assert target.read_text(encoding="utf-8") == "two ✓\n"
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["swarm_preflight.prom"]


def test_write_atomic_keeps_the_old_file_when_the_write_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "report.json"
    write_atomic(target, "old")

    def broken(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_write_atomic_into_a_missing_directory_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot write"):
        write_atomic(tmp_path / "nope" / "x.prom", "x")


def test_readers_never_see_a_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "big.prom"
    bodies = ["a" * 200_000 + "\n", "b" * 300_000 + "\n"]
    write_atomic(target, bodies[0])
    stop = threading.Event()
    seen: set[str] = set()

    def reader() -> None:
        while not stop.is_set():
            seen.add(target.read_text())

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(40):
            write_atomic(target, bodies[i % 2])
    finally:
        stop.set()
        thread.join(timeout=10)
    assert seen <= set(bodies)
