"""The event stream's renderers: a long gate visibly progresses, a short one does not flood."""

from __future__ import annotations

import io
import time

from orchestrator.events import EventBus, LiveRenderer, PlainRenderer
from orchestrator.secrets import Secret


def progress(bus: EventBus, left: float) -> None:
    bus.emit("gate", "progress", host="starlord", phase=3, service="vllm-primary",
             message="vllm-primary: compose health: container running, health starting",
             held=0.0, min_healthy=15.0, deadline_left=left)


def test_a_long_gate_prints_progress_every_30_s_per_service(monkeypatch) -> None:
    out = io.StringIO()
    bus = EventBus()
    renderer = PlainRenderer(out)
    bus.subscribe(renderer)
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    for _ in range(10):           # ten rounds in 10 s: nothing new to say yet
        progress(bus, 890)
        clock[0] += 1
    assert out.getvalue() == ""
    clock[0] += 25
    progress(bus, 865)
    assert "vllm-primary" in out.getvalue() and "deadline in 14m25s" in out.getvalue()


def test_the_live_view_has_a_row_per_waiting_service() -> None:
    from rich.console import Console

    buffer = io.StringIO()
    live = LiveRenderer()
    live.live.stop()
    live.console = Console(file=buffer, width=160, force_terminal=False)
    bus = EventBus()
    bus.subscribe(live)
    bus.emit("gate", "start", phase=3, message="waiting for 2 service(s)")
    progress(bus, 600)
    bus.emit("gate", "progress", host="starlord", phase=3, service="gpu-monitor", message="gpu-monitor: passing",
             held=5.0, min_healthy=15.0, deadline_left=580)
    live.console.print(live._table())
    text = buffer.getvalue()
    assert "vllm-primary" in text and "gpu-monitor" in text and "5/15s" in text and "10m00s" in text


def drain(bus: EventBus, in_flight: int, waited: float) -> None:
    bus.emit("drain", "progress", host="starlord", phase=3, service="vllm-primary",
             message=f"vllm-primary: draining, {in_flight} in flight, {waited:.0f} s of 120 s",
             in_flight=in_flight, waited=waited, limit=120.0)


def test_a_drain_shows_at_once_then_every_10_s(monkeypatch) -> None:
    out = io.StringIO()
    bus = EventBus()
    bus.subscribe(PlainRenderer(out))
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    drain(bus, 3, 0)
    clock[0] += 5
    drain(bus, 2, 5)
    clock[0] += 6
    drain(bus, 1, 11)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "draining, 3 in flight, 0 s of 120 s" in lines[0]
    assert "draining, 1 in flight, 11 s of 120 s" in lines[1]


def test_the_live_view_shows_a_drain() -> None:
    from rich.console import Console

    buffer = io.StringIO()
    live = LiveRenderer()
    live.live.stop()
    live.console = Console(file=buffer, width=160, force_terminal=False)
    bus = EventBus()
    bus.subscribe(live)
    drain(bus, 3, 12)
    live.console.print(live._table())
    text = buffer.getvalue()
    assert "vllm-primary" in text and "draining" in text and "3 in flight, 12 s of 120 s" in text


def test_event_data_is_scrubbed() -> None:
    secret = Secret("an-event-secret-77", "x")
    bus = EventBus()
    event = bus.emit("apply", "changed", host="n", message=f"m {secret.reveal()}", detail={"k": secret.reveal()})
    assert secret.reveal() not in event.message and secret.reveal() not in str(event.data)


class GoneReader(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_view_whose_reader_left_stops_and_the_run_goes_on() -> None:
    """`swarm deploy --output json | head -1`: the renderer's pipe breaks at the second event;
    the deploy must not stop half way, and the audit (another subscriber) still sees all."""
    bus = EventBus()
    bus.subscribe(PlainRenderer(GoneReader(), verbose=2))
    seen: list[str] = []
    bus.subscribe(lambda e: seen.append(e.kind))
    for kind in ("run", "upload", "gate", "run"):
        bus.emit(kind, "ok", message=kind)
    assert seen == ["run", "upload", "gate", "run"]


def test_an_audit_log_that_cannot_be_written_is_said_once_and_the_run_goes_on(tmp_path, capsys) -> None:
    from orchestrator.events import AuditLog

    log = AuditLog(tmp_path / "audit.log")
    (tmp_path / "audit.log").mkdir()          # unwritable as a file: open() raises an OSError
    bus = EventBus()
    bus.subscribe(log)
    seen: list[str] = []
    bus.subscribe(lambda e: seen.append(e.kind))
    bus.emit("upload", "ok", host="thanos")
    bus.emit("switch", "ok", host="thanos")
    assert seen == ["upload", "switch"]
    assert capsys.readouterr().err.count("local audit log") == 1


def test_the_local_audit_log_is_private_to_its_owner(tmp_path) -> None:
    """It says who deployed what where, and the output of commands that failed: 0600, whatever
    the umask, and a log an older swarm left readable is narrowed."""
    import os
    import stat

    from orchestrator.events import AuditLog

    old = os.umask(0o022)
    try:
        fresh, older = tmp_path / "state" / "audit.log", tmp_path / "older.log"
        older.write_text("")
        older.chmod(0o644)
        for path in (fresh, older):
            bus = EventBus()
            bus.subscribe(AuditLog(path))
            bus.emit("switch", "ok", host="thanos", message="release 1")
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
            assert "release 1" in path.read_text()
        assert stat.S_IMODE(fresh.parent.stat().st_mode) == 0o700
    finally:
        os.umask(old)
