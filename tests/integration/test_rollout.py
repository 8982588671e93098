"""The front door and the rollout on the deployed lab, as a client of the fleet sees them.

One HAProxy routes each request to the model it names and 404s any other; from a lab address
outside `allowed_ips` every published port of oracle refuses it except those the inventory
opens; a change of every vLLM's image and of HAProxy's own config, in one deploy under a
streaming load, loses no stream: the model servers roll one at a time behind the front door,
HAProxy reloads in place. The fleet is left changed: the next module's `deployed` converges it.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from orchestrator.lab.load import Load, during
from orchestrator.render.frontdoor import backend_of
from tests.integration.labtools import node_get, node_sh, ok, swarm

pytestmark = pytest.mark.lab

VLLM_KEY = "lab-vllm-key-d81f2c6b"
MASTER_KEY = "sk-lab-master-9c41e77a"
NEMO = "casperhansen/mistral-nemo-instruct-2407-awq"
MISTRAL = "TheBloke/Mistral-7B-Instruct-v0.2-GPTQ"
VLLMS = {"vllm-primary": "starlord", "vllm-secondary": "starlord", "vllm-backup": "thanos"}

CONNECT = """
import json, socket, sys
out = {}
for port in sys.argv[2:]:
    s = socket.socket(); s.settimeout(3)
    try:
        s.connect((sys.argv[1], int(port))); out[port] = "open"
    except OSError as exc:
        out[port] = type(exc).__name__
    finally:
        s.close()
print(json.dumps(out))
"""
GET = """
import sys, urllib.error, urllib.request
req = urllib.request.Request(sys.argv[1], headers={"Authorization": "Bearer " + sys.argv[2]})
try:
    print(urllib.request.urlopen(req, timeout=10).status)
except urllib.error.HTTPError as exc:
    print(exc.code)
"""


def pool(oracle: str, model: str, tokens: int = 4) -> httpx.Response:
    return httpx.post(f"http://{oracle}/pool/v1/chat/completions", timeout=60,
                      headers={"Authorization": f"Bearer {VLLM_KEY}"},
                      json={"model": model, "max_tokens": tokens, "messages": [{"role": "user", "content": "hi"}]})


def test_the_front_door_sends_each_request_to_the_model_it_names(deployed) -> None:
    oracle = deployed.nodes["oracle"]
    listed = httpx.get(f"http://{oracle}/pool/v1/models", headers={"Authorization": f"Bearer {VLLM_KEY}"},
                       timeout=10).json()
    assert {m["id"] for m in listed["data"]} == {NEMO, MISTRAL}
    for _ in range(3):  # one pool over every vLLM answered half of these 404 (the wrong model)
        for model in (NEMO, MISTRAL):
            answer = pool(oracle, model)
            assert answer.status_code == 200 and answer.json()["model"] == model, answer.text
    unknown = pool(oracle, "gpt-4o")
    message = unknown.json()["error"]["message"]
    assert unknown.status_code == 404 and "gpt-4o is not served by this fleet" in message and NEMO in message


def test_a_lab_address_outside_allowed_ips_reaches_only_the_ports_the_inventory_opens(deployed) -> None:
    """From starlord (on the lab, not on `allowed_ips`): every port oracle publishes refuses it,
    except the front door (whose API paths answer 403) and Vault and Consul (reach: fleet)."""
    oracle = deployed.nodes["oracle"]
    published = sorted({int(p.rsplit(":", 1)[1].split("->")[0])
                        for line in node_sh(deployed, "oracle", "docker", "ps", "--format", "{{.Ports}}").splitlines()
                        for p in line.split(", ") if "->" in p})
    assert {80, 4000, 5432, 6379, 8200, 8500, 8888, 9090} <= set(published)
    seen = json.loads(deployed.exec_on("starlord", [sys.executable, "-c", CONNECT, oracle,
                                                    *map(str, published)]).stdout)
    assert {int(p) for p, what in seen.items() if what == "open"} == {80, 8200, 8500}, seen
    for path, key in (("/v1/models", MASTER_KEY), ("/pool/v1/models", VLLM_KEY), ("/stats", "")):
        status = deployed.exec_on("starlord", [sys.executable, "-c", GET, f"http://{oracle}{path}", key])
        assert status.stdout.strip() == "403", path
    # the controller is on the list: LiteLLM answers it, through the front door only
    models = httpx.get(f"http://{oracle}/v1/models", headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=20)
    assert models.status_code == 200 and models.json()["data"]


def changed_inventory(lab, path: Path, tag: str) -> Path:
    """The lab inventory with every vLLM on image `tag`, HAProxy's rate limit moved (a change of
    its config only), and short holds (this is about what clients see, not about waiting)."""
    data = yaml.safe_load(lab.inventory_path.read_text())
    for node in ("oracle", "starlord", "thanos"):
        data["nodes"][node].setdefault("vars", {})["min_healthy_time"] = "2s"
    for svc, node in VLLMS.items():
        data["nodes"][node].setdefault("services", {}).setdefault(svc, {})["image_tag"] = tag
    haproxy = data["nodes"]["oracle"].setdefault("services", {}).setdefault("haproxy", {})
    haproxy["rate_limit_per_10s"] = random.randint(5000, 9000)
    # NEMO has one instance: its requests are held through its swap (drain, up, first health
    # check, hold, a test completion; 12-18 s here), 30 s by default; 50 s (under the client
    # timeout, 60 s) so a loaded machine cannot turn a held request into a 503
    haproxy["queue_timeout"] = 50
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def images(lab) -> dict[str, str]:
    out = {}
    for svc, node in VLLMS.items():
        out[svc] = node_sh(lab, node, "docker", "inspect", "-f", "{{.Config.Image}}", f"swarm-{node}-{svc}-1").strip()
    return out


async def under_load(oracle: str, run: Any) -> tuple[dict[str, Any], Any]:
    load = Load(url=f"http://{oracle}/pool/v1/chat/completions", models=[NEMO, MISTRAL], rate=2.0,
                headers={"Authorization": f"Bearer {VLLM_KEY}"}, max_in_flight=60, tokens=(32, 128))
    return await during(load, run, seed=21)


def test_every_model_server_and_the_front_door_change_under_load_without_losing_a_stream(deployed, tmp_path) -> None:
    """One deploy of phases 2-4: HAProxy's config changes (reloaded in place: same container),
    every vLLM's image changes (rolled one instance of a model at a time, drained first), while
    streams of 32-128 tokens run through the front door at 2 a second: none fails or is cut."""
    lab, oracle = deployed, deployed.nodes["oracle"]
    before = images(lab)
    tag = "v0.6.3" if ":v0.6.3.post1" in before["vllm-primary"] else "v0.6.3.post1"
    haproxy_id = node_sh(lab, "oracle", "docker", "inspect", "-f", "{{.Id}}", "swarm-oracle-haproxy-1").strip()
    inventory = changed_inventory(lab, tmp_path / "inventory.yml", tag)
    started = time.monotonic()
    seen, result = asyncio.run(under_load(oracle, lambda: swarm(lab, "deploy", "--phase", "2-4",
                                                                inventory=inventory)))
    ok(result)
    print(f"rolled 3 vLLM + reloaded HAProxy in {time.monotonic() - started:.0f}s under load: {seen}")  # noqa: T201
    assert seen["streams"] >= 20 and seen["failed"] == 0 and seen["truncated"] == 0, seen
    assert all(f":{tag}@sha256:" in image or image.endswith(f":{tag}") for image in images(lab).values()), images(lab)
    assert node_sh(lab, "oracle", "docker", "inspect", "-f", "{{.Id}}", "swarm-oracle-haproxy-1").strip() == haproxy_id
    assert "reloaded its config" in result.stdout + result.stderr
    _, stats = node_get(lab, "oracle", "http://127.0.0.1:8888/stats;csv")
    for svc, model in (("vllm-primary", NEMO), ("vllm-secondary", MISTRAL), ("vllm-backup", MISTRAL)):
        row = next(line for line in stats.splitlines() if line.startswith(f"{backend_of(model)},{svc},"))
        assert ",UP," in row, row  # every instance back in the front door
