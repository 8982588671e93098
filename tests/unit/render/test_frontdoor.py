"""The front door as rendered (roles/haproxy), run by the real HAProxy (Debian's 2.6, as in the
lab) in front of two lab vLLM stand-ins on this machine's loopback: requests go to the model
they name, an unknown model gets a 404 listing the fleet's models, a model whose every
instance is drained waits and then gets a clean 503 with Retry-After, and a drain survives a
reload through the server-state file. Only the addresses and the socket paths of the rendered
config are changed (to local ones); everything else is what a node runs."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config.project import load_project
from orchestrator.errors import InputError
from orchestrator.lab.standins import vllm as standin
from orchestrator.render import frontdoor
from orchestrator.render.fleet import render_fleet

NEMO = "casperhansen/mistral-nemo-instruct-2407-awq"
MISTRAL = "TheBloke/Mistral-7B-Instruct-v0.2-GPTQ"


ROUTER = "127.0.0.3"   # overflow's address in these tests: a loopback address a client can bind


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def local_config(text: str, run: Path, ports: dict[str, int], servers: dict[str, int]) -> str:
    """The rendered haproxy.cfg with local addresses: binds, servers, socket paths."""
    text = text.replace("/var/run/haproxy", str(run))
    text = re.sub(r"^resolvers docker\n(?:    .*\n)+", "", text, flags=re.M)
    text = text.replace(" resolvers docker", "")
    text = text.replace("log stdout format raw", "log stderr format raw")
    for bind, port in ports.items():
        text = text.replace(f"    bind :{bind}\n", f"    bind 127.0.0.1:{port}\n")
    text = re.sub(r"^    server (litellm|open-webui|grafana) .*\n", "", text, flags=re.M)
    for name, port in servers.items():
        text = re.sub(rf"^(    server {name}) \S+ ", rf"\1 127.0.0.1:{port} ", text, flags=re.M)
    return text.replace("acl allowed_client src 100.64.0.0/10 127.0.0.1", "acl allowed_client src 127.0.0.1")


class FrontDoor:
    def __init__(self, run: Path, public: int, internal: int, master: subprocess.Popen[bytes], log: Path) -> None:
        self.run, self.public, self.internal, self.master, self.log = run, public, internal, master, log

    def post(self, path: str, body: dict[str, Any], port: int | None = None,
             source: str | None = None) -> tuple[int, dict[str, str], str, float]:
        started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", port or self.public, timeout=30,
                                          source_address=(source, 0) if source else None)
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        reply = conn.getresponse()
        text = reply.read().decode()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, text, time.monotonic() - started

    def command(self, text: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.run / "admin.sock"))
            s.sendall(text.encode() + b"\n")
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        return out.decode()


def wait_for(check: Callable[[], bool], within: float = 15) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.fixture
def door(project_copy: Path, edit_yaml: Any, tmp_path: Path) -> Iterator[FrontDoor]:
    if shutil.which("haproxy") is None:
        pytest.fail("haproxy not installed: apt-get install haproxy (scripts/setup.sh does)")
    def edit(d: dict[str, Any]) -> None:
        d["nodes"]["oracle"].setdefault("services", {}).setdefault("haproxy", {}).update(
            {"queue_timeout": 2, "retry_after": 7})
        d["nodes"]["overflow"]["address"] = ROUTER   # its LiteLLM (backup-router) reaches the models by path

    edit_yaml(project_copy / "inventory/swarm.yml", edit)
    rendered = render_fleet(load_project(project_copy)).nodes["oracle"]
    cfg_dir, run = tmp_path / "cfg", tmp_path / "run"
    cfg_dir.mkdir()
    run.mkdir()
    servers = {"vllm-primary": free_port(), "vllm-secondary": free_port(), "vllm-backup": free_port()}
    public, internal = free_port(), free_port()
    text = rendered.files["config/haproxy/haproxy.cfg"].decode()
    (cfg_dir / "haproxy.cfg").write_text(local_config(text, run, {"8080": public, "8081": internal,
                                                                   "8888": free_port()}, servers))
    (cfg_dir / "hold.lua").write_bytes(rendered.files["config/haproxy/hold.lua"])
    env = {**os.environ, standin.RATE_ENV: "200"}
    models = {"vllm-primary": NEMO, "vllm-secondary": MISTRAL, "vllm-backup": MISTRAL}
    procs = [subprocess.Popen([sys.executable, standin.__file__, "--model", models[name], "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stderr=subprocess.DEVNULL)
             for name, port in servers.items()]
    master = subprocess.Popen(["haproxy", "-W", "-db", "-f", str(cfg_dir / "haproxy.cfg")],
                              stdout=subprocess.DEVNULL, stderr=(tmp_path / "haproxy.log").open("w"))
    front = FrontDoor(run, public, internal, master, tmp_path / "haproxy.log")
    try:
        wait_for(lambda: (run / "admin.sock").exists())
        wait_for(lambda: front.command("show stat").count(",UP,") >= 3 + 3)  # servers and backends
        yield front
    finally:
        for proc in (master, *procs):
            proc.terminate()
        for proc in (master, *procs):
            proc.wait(10)


def chat(model: str, **more: Any) -> dict[str, Any]:
    return {"model": model, "max_tokens": 3, "messages": [{"role": "user", "content": "hello"}], **more}


def test_the_pool_routes_each_request_to_the_model_it_names(door: FrontDoor) -> None:
    for _ in range(4):  # with a single pool over every vLLM, half of these went to the wrong model
        for model in (NEMO, MISTRAL):
            status, _, text, _ = door.post("/pool/v1/chat/completions", chat(model))
            assert status == 200, text
            assert json.loads(text)["model"] == model
    slug = frontdoor.slug_of(MISTRAL)
    status, _, text, _ = door.post(f"/models/{slug}/v1/chat/completions", chat(MISTRAL), port=door.internal)
    assert status == 200 and json.loads(text)["model"] == MISTRAL  # LiteLLM's way in: the model's path


def test_a_router_on_another_node_reaches_the_models_by_path_and_nothing_else(door: FrontDoor) -> None:
    """The backup-router (LiteLLM on overflow, not on `allowed_ips`) reaches a model by its
    path, as its api_base says; the pool and LiteLLM's API still turn it away, and another
    address outside the list gets 403 on the model's path too."""
    path = "/models/TheBloke--Mistral-7B-Instruct-v0.2-GPTQ/v1/chat/completions"
    status, _, text, _ = door.post(path, chat(MISTRAL), source=ROUTER)
    assert status == 200 and json.loads(text)["model"] == MISTRAL, text
    assert door.post("/pool/v1/chat/completions", chat(MISTRAL), source=ROUTER)[0] == 403
    assert door.post("/v1/chat/completions", chat(MISTRAL), source=ROUTER)[0] == 403
    assert door.post(path, chat(MISTRAL), source="127.0.0.4")[0] == 403


def test_an_unknown_model_is_a_404_naming_the_models_served(door: FrontDoor) -> None:
    status, _, text, _ = door.post("/pool/v1/chat/completions", chat("gpt-4o"))
    message = json.loads(text)["error"]["message"]
    assert status == 404
    assert "model gpt-4o is not served by this fleet" in message and NEMO in message and MISTRAL in message


def test_a_model_with_every_instance_drained_waits_then_gets_503_with_retry_after(door: FrontDoor) -> None:
    backend = frontdoor.backend_of(NEMO)
    assert door.command(f"set server {backend}/vllm-primary state drain").strip() == ""
    status, headers, text, took = door.post("/pool/v1/chat/completions", chat(NEMO))
    assert status == 503 and headers["retry-after"] == "7" and took >= 1.9, (status, headers, took)
    assert "being replaced" in json.loads(text)["error"]["message"]
    status, _, _, _ = door.post("/pool/v1/chat/completions", chat(MISTRAL))
    assert status == 200  # the other model is not held


def test_a_model_whose_instances_are_down_without_a_drain_gets_503_at_once(door: FrontDoor) -> None:
    """An outage is not a swap: nothing to wait for, so LiteLLM's declared fallback can act."""
    backend = frontdoor.backend_of(NEMO)
    door.command(f"set server {backend}/vllm-primary health down")
    status, headers, _, took = door.post("/pool/v1/chat/completions", chat(NEMO))
    assert status == 503 and headers["retry-after"] == "7" and took < 1.5


def test_a_held_request_is_served_once_an_instance_is_back(door: FrontDoor) -> None:
    backend = frontdoor.backend_of(NEMO)
    door.command(f"set server {backend}/vllm-primary state drain")
    answer: dict[str, Any] = {}

    def ask() -> None:
        answer["reply"] = door.post("/pool/v1/chat/completions", chat(NEMO))

    import threading

    asking = threading.Thread(target=ask)
    asking.start()
    time.sleep(1.0)  # held meanwhile (the queue waits 2 s); 0.3 s of slack for the thread to start
    door.command(f"set server {backend}/vllm-primary state ready")
    asking.join(10)
    status, _, text, took = answer["reply"]
    assert status == 200 and json.loads(text)["model"] == NEMO and took >= 0.7


def test_a_drain_saved_to_the_state_file_survives_a_reload(door: FrontDoor) -> None:
    backend = frontdoor.backend_of(MISTRAL)
    door.command(f"set server {backend}/vllm-secondary state drain")
    (door.run / "server-state").write_text(door.command("show servers state"))
    before = re.search(r"^Pid: (\d+)$", door.command("show info"), re.M)
    door.master.send_signal(signal.SIGUSR2)

    def reloaded() -> bool:
        try:
            now = re.search(r"^Pid: (\d+)$", door.command("show info"), re.M)
        except OSError:
            return False
        return bool(now and before and now.group(1) != before.group(1))

    try:
        wait_for(reloaded, within=10)
    except AssertionError:  # the master let the signal go unheeded (engine/rollout.confirm_reloads): again
        door.master.send_signal(signal.SIGUSR2)
        wait_for(reloaded, within=20)
    row = next(line for line in door.command("show stat").splitlines() if line.startswith(f"{backend},vllm-secondary,"))
    assert ",DRAIN," in row


def test_values_haproxy_cannot_carry_are_refused() -> None:
    with pytest.raises(InputError):
        frontdoor.haproxy_quoted("it's")
    with pytest.raises(InputError):
        frontdoor.slug_of("a b")
    assert frontdoor.slug_of("org/name") == "org--name"
    with pytest.raises(InputError, match="same front-door path"):
        frontdoor.models([{"role": "vllm", "name": "a", "vars": {"served_model_name": "x/y"}},
                          {"role": "vllm", "name": "b", "vars": {"served_model_name": "x--y"}}])
