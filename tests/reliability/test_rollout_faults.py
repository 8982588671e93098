"""A rolling rollout keeps its promise under faults, with clients streaming through the front door:
a broken second instance unwinds its group (drained again, previous definition, checked), a
signal mid-drain puts the instance back untouched, and an HAProxy reload during a drain does
not put the drained server back in."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import threading
from typing import Any

import httpx
import pytest

from orchestrator.lab.load import Load, during
from orchestrator.render.frontdoor import backend_of
from tests.reliability.faults import (
    assert_consistent,
    fast_inventory,
    set_service,
    sh,
    snapshot,
    start,
    swarm,
)

pytestmark = pytest.mark.lab

VLLM_KEY = "lab-vllm-key-d81f2c6b"
MISTRAL = "TheBloke/Mistral-7B-Instruct-v0.2-GPTQ"
GROUP = backend_of(MISTRAL)


def image(lab, svc: str, node: str = "starlord") -> str:
    return sh(lab, node, f"docker inspect -f '{{{{.Config.Image}}}}' swarm-{node}-{svc}-1").strip()


def container(lab, svc: str, node: str = "starlord") -> str:
    return sh(lab, node, f"docker inspect -f '{{{{.Id}}}}' swarm-{node}-{svc}-1").strip()


def other_tag(current: str) -> str:
    """The other of the two images a rollout moves between (images are pinned: `...:tag@sha256:...`)."""
    return "v0.6.3" if ":v0.6.3.post1" in current else "v0.6.3.post1"


def runtime_api(lab, command: str) -> str:
    """The front door's admin socket, as the node has it on disk (the lab node's /opt)."""
    path = lab.node_dir("oracle") / "opt/ai-swarm/run/haproxy/admin.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(command.encode() + b"\n")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out.decode()


def server_status(lab, server: str) -> str:
    row = next(line for line in runtime_api(lab, "show stat").splitlines() if line.startswith(f"{GROUP},{server},"))
    return row.split(",")[17]


def one_model_group(data: dict[str, Any]) -> None:
    """vllm-primary serves the secondary's model (its pinned revision too): a group of two
    instances in phase 3."""
    secondary = data["nodes"]["starlord"]["services"]["vllm-secondary"]
    same = {k: secondary[k] for k in ("model", "quantization", "max_model_len", "revision") if k in secondary}
    set_service(data, "starlord", "vllm-primary", **same)


async def streaming(oracle: str, run: Any) -> tuple[dict[str, Any], Any]:
    load = Load(url=f"http://{oracle}/pool/v1/chat/completions", models=[MISTRAL], rate=2.0,
                headers={"Authorization": f"Bearer {VLLM_KEY}"}, max_in_flight=60, tokens=(32, 128))
    return await during(load, run, seed=7)


def test_a_broken_second_instance_unwinds_its_group_and_no_stream_is_lost(deployed, tmp_path, state) -> None:
    lab = deployed
    ready = fast_inventory(lab, tmp_path / "group.yml", one_model_group)
    assert swarm(lab, ready, "deploy", "--phase", "2-3", state=state, timeout=600).code == 0
    before, images = snapshot(lab), {s: image(lab, s) for s in ("vllm-primary", "vllm-secondary")}
    tag = other_tag(images["vllm-primary"])

    def broken(data: dict[str, Any]) -> None:
        one_model_group(data)
        set_service(data, "starlord", "vllm-primary", image_tag=tag)
        # 15 s: several times what a healthy stand-in needs (docker's first 5 s health check, the
        # 2 s hold), so only the broken image misses it; the load runs through the whole run
        set_service(data, "starlord", "vllm-secondary", image_tag="v0.6.3-broken", healthy_deadline="15s")

    inventory = fast_inventory(lab, tmp_path / "broken.yml", broken)
    try:
        seen, run = asyncio.run(streaming(lab.nodes["oracle"], lambda: swarm(lab, inventory, "deploy", "--phase", "3",
                                                                             state=state, timeout=600)))
        assert run.code == 1, run.stderr
        assert "vllm-secondary" in run.stderr and "rolled back" in run.stderr
        rolled = [e["message"] for e in run.events if e["kind"] == "rollback" and e["state"] == "changed"]
        assert any(m.startswith("vllm-secondary: back on") for m in rolled), rolled
        assert any(m.startswith("vllm-primary: back on") for m in rolled), rolled  # it had moved: back too
        assert seen["failed"] == 0 and seen["truncated"] == 0 and seen["streams"] >= 20, seen
        assert {s: image(lab, s) for s in images} == images  # every touched instance on its previous image
        assert ":v0.6.3-broken" not in image(lab, "vllm-backup", "thanos")  # never reached
        assert server_status(lab, "vllm-primary").startswith("UP")
        assert server_status(lab, "vllm-secondary").startswith("UP")
        assert_consistent(lab, before, run, state=state)
        print(f"broken second instance: exit 1 after {run.seconds():.0f}s, streams {seen}")  # noqa: T201
    finally:  # the fleet as the lab inventory has it again, for the tests after this one
        swarm(lab, fast_inventory(lab, tmp_path / "back.yml"), "deploy", "--phase", "2-3", state=state, timeout=600)


def test_sigterm_mid_drain_puts_the_instance_back_and_a_reload_keeps_the_drain(deployed, tmp_path, state) -> None:
    lab = deployed
    oracle = lab.nodes["oracle"]
    before, kept = snapshot(lab), container(lab, "vllm-secondary")
    inventory = fast_inventory(lab, tmp_path / "inv.yml", lambda d: set_service(
        d, "starlord", "vllm-secondary", image_tag=other_tag(image(lab, "vllm-secondary"))))
    long_stream: dict[str, Any] = {}

    def stream() -> None:  # ~30 s at the stand-in's 50 tokens a second: the drain waits for it (the
        # run reaches the drain and the reload is done in ~6-12 s here; 20 s left too little on a loaded machine)
        body = {"model": MISTRAL, "stream": True, "max_tokens": 1500, "messages": [{"role": "user", "content": "x"}]}
        with httpx.stream("POST", f"http://{oracle}/pool/v1/chat/completions", json=body, timeout=120,
                          headers={"Authorization": f"Bearer {VLLM_KEY}"}) as reply:
            lines = list(reply.iter_lines())
        long_stream.update(status=reply.status_code, done=lines[-1:] == ["data: [DONE]"] or "data: [DONE]" in lines,
                           tokens=sum(1 for line in lines if '"content": "' in line and '"role"' not in line))

    streamer = threading.Thread(target=stream)
    streamer.start()
    run = start(lab, inventory, "deploy", "--phase", "3", state=state)
    run.wait_for("drain", "progress", timeout=180, service="vllm-secondary")
    pid = re.search(r"^Pid: (\d+)$", runtime_api(lab, "show info"), re.M)
    sh(lab, "oracle", "docker kill -s USR2 swarm-oracle-haproxy-1 >/dev/null")  # someone reloads HAProxy
    reloaded = False
    for _ in range(100):
        now = re.search(r"^Pid: (\d+)$", runtime_api(lab, "show info"), re.M)
        if now and pid and now.group(1) != pid.group(1):
            reloaded = True
            break
        threading.Event().wait(0.2)
    assert reloaded, "HAProxy did not reload"
    assert server_status(lab, "vllm-secondary") == "DRAIN"  # the new worker read the saved state
    run.signal(signal.SIGTERM)
    run.finish()
    streamer.join(120)
    assert run.code == 143, run.stderr
    assert container(lab, "vllm-secondary") == kept  # never swapped
    assert server_status(lab, "vllm-secondary").startswith("UP")  # back in the front door
    assert long_stream == {"status": 200, "done": True, "tokens": 1500}, long_stream
    assert_consistent(lab, before, run, state=state)
    print(f"SIGTERM mid-drain: exit 143 after {run.seconds():.0f}s, the stream finished whole")  # noqa: T201

