"""Preflight results and the four ways they leave swarm: text, JSON, JUnit XML, Prometheus.

A `CheckResult` is one check on one subject (an image, a GPU, a port) on one node (None
for fleet-wide checks), with a status (`pass` / `warn` / `fail`), a message that says
what is wrong and a hint that says what to do. A `Report` is the list of them; it
fails when any check fails, and under `--strict` when any warns too.

Every renderer treats names and messages as hostile text: quotes, newlines, control
characters, `<`, bidi overrides and lone surrogates never break the format or the
terminal, and known secret values are scrubbed. `write_atomic` replaces a file in one
step (temp file in the same directory + `os.replace`), so the node exporter's textfile
collector or a CI job never reads half a report.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
import unicodedata
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, get_args

from orchestrator.errors import InputError
from orchestrator.secrets import scrub

Status = Literal["pass", "warn", "fail"]
STATUSES: tuple[Status, ...] = get_args(Status)
STATUS_VALUE: dict[Status, float] = {"pass": 1.0, "warn": 0.5, "fail": 0.0}
_SEVERITY: dict[Status, int] = {"pass": 0, "warn": 1, "fail": 2}
FLEET = "fleet"  # heading / classname for checks that belong to no single node


@dataclass(frozen=True)
class CheckResult:
    """One check on one subject, on one node (None: fleet-wide)."""

    check: str
    subject: str
    node: str | None
    status: Status
    message: str
    hint: str | None = None
    duration_s: float = 0.0

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")


@dataclass(frozen=True)
class Report:
    """All results of one preflight run."""

    results: tuple[CheckResult, ...]
    finished_at: float = field(default_factory=time.time)
    duration_s: float = 0.0
    # image as deployed -> `registry/repo@sha256:...` checked, so a deploy can pin it
    pins: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls, results: Iterable[CheckResult], pins: Mapping[str, str] | None = None, **kwargs: float
    ) -> Report:
        return cls(tuple(results), pins=dict(pins or {}), **kwargs)

    def with_status(self, status: Status) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if r.status == status)

    @property
    def failed(self) -> tuple[CheckResult, ...]:
        return self.with_status("fail")

    @property
    def warned(self) -> tuple[CheckResult, ...]:
        return self.with_status("warn")

    @property
    def passed(self) -> tuple[CheckResult, ...]:
        return self.with_status("pass")

    def counts(self) -> dict[str, int]:
        return {s: len(self.with_status(s)) for s in STATUSES}

    def exit_code(self, strict: bool = False) -> int:
        """0 when every check passed (warnings allowed unless strict), else 1."""
        return 1 if self.failed or (strict and self.warned) else 0

    def by_node(self) -> dict[str, list[CheckResult]]:
        """Results grouped per node in first-seen order; fleet-wide checks under FLEET."""
        groups: dict[str, list[CheckResult]] = {}
        for result in self.results:
            groups.setdefault(result.node or FLEET, []).append(result)
        return groups


# --- hostile text -------------------------------------------------------------------

_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _is_unsafe(char: str) -> bool:
    return unicodedata.category(char) in ("Cc", "Cs") or char in _BIDI


def _escape_char(char: str) -> str:
    escapes = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    return escapes.get(char, f"\\u{ord(char):04x}" if ord(char) > 0xFF else f"\\x{ord(char):02x}")


def one_line(text: str) -> str:
    """`text` with control, bidi and surrogate characters written as visible escapes."""
    return "".join(_escape_char(c) if _is_unsafe(c) else c for c in text)


def _clean(report: Report) -> Report:
    """The report with known secret values masked in every text field."""
    return replace(report, results=tuple(_clean_result(r) for r in report.results))


def _clean_result(result: CheckResult) -> CheckResult:
    return replace(
        result,
        check=scrub(result.check),
        subject=scrub(result.subject),
        node=scrub(result.node) if result.node is not None else None,
        message=scrub(result.message),
        hint=scrub(result.hint) if result.hint is not None else None,
    )


# --- text ---------------------------------------------------------------------------


def _width(text: str) -> int:
    wide = ("W", "F")
    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in wide else 1
        for c in text
    )


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


def _text_rows(results: list[CheckResult]) -> list[str]:
    checks = [one_line(r.check) for r in results]
    subjects = [one_line(r.subject) for r in results]
    check_w = max(_width(c) for c in checks)
    subject_w = max(_width(s) for s in subjects)
    rows = []
    for result, check, subject in zip(results, checks, subjects, strict=True):
        head = f"  {result.status.upper():<4}  {_pad(check, check_w)}  {_pad(subject, subject_w)}  "
        rows.extend(_with_continuation(head, result.message))
        if result.hint:
            rows.extend(_with_continuation(" " * _width(head) + "hint: ", result.hint))
    return rows


def _with_continuation(head: str, text: str) -> list[str]:
    lines = [one_line(line) for line in (text.splitlines() or [""])]
    indent = " " * _width(head)
    return [head + lines[0]] + [indent + line for line in lines[1:]]


def summary_line(report: Report) -> str:
    counts = report.counts()
    return (
        f"preflight: {counts['pass']} passed, {counts['warn']} warning(s), "
        f"{counts['fail']} failed in {report.duration_s:.1f}s"
    )


def render_text(report: Report) -> str:
    """Per node: one aligned row per check, the hint under a failing one; a summary."""
    report = _clean(report)
    lines: list[str] = []
    for node, results in report.by_node().items():
        lines.append(one_line(node))
        lines.extend(_text_rows(results))
        lines.append("")
    lines.append(summary_line(report))
    return "\n".join(lines) + "\n"


# --- JSON ---------------------------------------------------------------------------


def render_json(report: Report) -> str:
    """One JSON object: summary, exit code, timestamps and every result."""
    report = _clean(report)
    summary: dict[str, int] = dict(report.counts())
    summary["total"] = len(report.results)
    document: dict[str, object] = {
        "ok": not report.failed,
        "exit_code": report.exit_code(),
        "summary": summary,
        "finished_at": _iso(report.finished_at),
        "duration_s": round(report.duration_s, 3),
        "results": [asdict(r) for r in report.results],
        "pins": dict(sorted(report.pins.items())),
    }
    text = json.dumps(document, ensure_ascii=False, indent=2)
    return _encodable(text) + "\n"


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def _encodable(text: str) -> str:
    """Lone surrogates cannot be written as UTF-8; spell them out instead."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


# --- JUnit XML ----------------------------------------------------------------------

_XML_INVALID = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(text: str) -> str:
    """Characters XML 1.0 cannot carry (NUL, ESC, surrogates...) as visible escapes."""
    return _XML_INVALID.sub(lambda m: _escape_char(m.group()), text)


def render_junit(report: Report, suite: str = "swarm preflight") -> str:
    """JUnit XML: a testsuite per node, a testcase per check+subject (classname = node);
    a failed check is a <failure>, a warning is reported in <system-out>."""
    report = _clean(report)
    counts = report.counts()
    root = ET.Element(
        "testsuites",
        _attrs(suite, len(report.results), counts["fail"], report.duration_s),
    )
    root.set("timestamp", _iso(report.finished_at))
    for node, results in report.by_node().items():
        root.append(_junit_suite(node, results, report.finished_at))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _attrs(name: str, tests: int, failures: int, seconds: float) -> dict[str, str]:
    return {
        "name": xml_safe(name),
        "tests": str(tests),
        "failures": str(failures),
        "errors": "0",
        "skipped": "0",
        "time": f"{seconds:.3f}",
    }


def _junit_suite(node: str, results: list[CheckResult], finished_at: float) -> ET.Element:
    failures = sum(r.status == "fail" for r in results)
    seconds = sum(r.duration_s for r in results)
    element = ET.Element("testsuite", _attrs(node, len(results), failures, seconds))
    element.set("timestamp", _iso(finished_at))
    for result in results:
        element.append(_junit_case(node, result))
    return element


def _junit_case(node: str, result: CheckResult) -> ET.Element:
    case = ET.Element(
        "testcase",
        {
            "classname": xml_safe(node),
            "name": xml_safe(f"{result.check}: {result.subject}"),
            "time": f"{result.duration_s:.3f}",
        },
    )
    detail = result.message + (f"\nhint: {result.hint}" if result.hint else "")
    if result.status == "fail":
        failure = ET.SubElement(
            case, "failure", {"message": xml_safe(result.message), "type": "fail"}
        )
        failure.text = xml_safe(detail)
    elif result.status == "warn":
        ET.SubElement(case, "system-out").text = xml_safe(f"WARN: {detail}")
    return case


# --- Prometheus text exposition -------------------------------------------------------

_METRIC = "swarm_preflight_check"


def prometheus_label(value: str) -> str:
    """A label value per the text exposition format: `\\`, `"` and newline escaped;
    other control characters (which the format cannot escape) become U+FFFD."""
    value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return "".join("\ufffd" if _is_unsafe(c) else c for c in value)


def _series_key(result: CheckResult) -> tuple[str, str, str]:
    return (result.node or "", result.check, result.subject)


def _worst_per_series(results: Iterable[CheckResult]) -> dict[tuple[str, str, str], CheckResult]:
    """One sample per label set (a duplicate series is invalid); the worst status wins."""
    series: dict[tuple[str, str, str], CheckResult] = {}
    for result in results:
        key = _series_key(result)
        kept = series.get(key)
        if kept is None or _SEVERITY[result.status] > _SEVERITY[kept.status]:
            series[key] = result
    return series


def _labels(key: tuple[str, str, str]) -> str:
    node, check, subject = (prometheus_label(part) for part in key)
    return f'{{node="{node}",check="{check}",subject="{subject}"}}'


def _number(value: float) -> str:
    return repr(float(value)) if value != int(value) else str(int(value))


def render_prometheus(report: Report) -> str:
    """Gauges for the node exporter's textfile collector: one per check (1 pass, 0.5
    warn, 0 fail), its duration, counts per status and the time of the run."""
    series = _worst_per_series(_clean(report).results)
    counts = report.counts()
    lines = [
        f"# HELP {_METRIC} Result of one swarm preflight check: 1 pass, 0.5 warn, 0 fail.",
        f"# TYPE {_METRIC} gauge",
        *(f"{_METRIC}{_labels(k)} {_number(STATUS_VALUE[r.status])}" for k, r in series.items()),
        f"# HELP {_METRIC}_duration_seconds How long one swarm preflight check took.",
        f"# TYPE {_METRIC}_duration_seconds gauge",
        *(f"{_METRIC}_duration_seconds{_labels(k)} {r.duration_s:.6f}" for k, r in series.items()),
        "# HELP swarm_preflight_checks Number of swarm preflight checks per status in the last run.",
        "# TYPE swarm_preflight_checks gauge",
        *(f'swarm_preflight_checks{{status="{s}"}} {counts[s]}' for s in STATUSES),
        "# HELP swarm_preflight_last_run_timestamp_seconds Unix time the last preflight run finished.",
        "# TYPE swarm_preflight_last_run_timestamp_seconds gauge",
        f"swarm_preflight_last_run_timestamp_seconds {report.finished_at:.3f}",
    ]
    return _encodable("\n".join(lines)) + "\n"


# --- output selection and atomic writing ------------------------------------------------

RENDERERS: dict[str, Callable[[Report], str]] = {
    "text": render_text,
    "json": render_json,
    "junit": render_junit,
    "prometheus": render_prometheus,
}


def render(report: Report, output: str) -> str:
    """Render with the renderer named by `--output`."""
    try:
        renderer = RENDERERS[output]
    except KeyError:
        raise InputError(
            f"--output {output!r} is not a report format",
            hint=f"use one of: {', '.join(RENDERERS)}",
        ) from None
    return renderer(report)


def write_atomic(path: str | os.PathLike[str], text: str, mode: int = 0o644) -> None:
    """Replace `path` with `text` in one step: readers see the old or the new file whole.

    The temp file starts with a dot and ends in `.tmp`, so the node exporter's textfile
    collector (which reads `*.prom`) never picks it up.
    """
    target = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except (FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        raise InputError(
            f"cannot write {target}: {exc.strerror}",
            hint="create the directory or pick another --out",
        ) from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
