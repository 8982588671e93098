"""examples/litellm-tailnet-ollama on a 3-node lab (proxy, hab, hugo): the real LiteLLM and
HAProxy routing to the Ollama stand-ins, the allowlist, per-client keys, the preflight's
reach and exposure checks. In `make test` (and `make examples`):
~3.5 min on 2 cores (lab ~12 s, phase 1 ~15 s, secrets ~6 s, phases 2-3 ~60 s, verify
~10 s, two preflights ~15 s, the revocation's phase-3 redeploy ~45 s)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from orchestrator.lab import api
from tests.integration.shaped import client, deploy_example, ok, swarm, verify_passes, wait_for

pytestmark = [pytest.mark.lab, pytest.mark.lab_shape]
NAME = "litellm-tailnet-ollama"
CLIENT_KEYS = {"acme": "sk-client-acme-5d1e7a93", "globex": "sk-client-globex-b08c4f62"}


@pytest.fixture(scope="module")
def tailnet(shaped_labs: None) -> Iterator[api.Lab]:
    yield deploy_example(NAME)


def front_door_chat(lab: api.Lab, model: str, key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with client() as http:
        return http.post(f"http://{lab.nodes['proxy']}/v1/chat/completions", headers=headers,
                         json={"model": model, "messages": [{"role": "user", "content": "Hello!"}]})


def test_tailnet_verify(tailnet: api.Lab) -> None:
    verify_passes(tailnet, NAME)


def test_tailnet_routes_model_names_to_the_ollama_hosts(tailnet: api.Lab) -> None:
    answer = front_door_chat(tailnet, "llama3-hugo", CLIENT_KEYS["acme"])
    assert answer.status_code == 200, answer.text
    assert f"{tailnet.nodes['hugo']}:11434" in answer.headers["x-litellm-model-api-base"]
    assert "[lab Ollama llama3:latest]" in answer.json()["choices"][0]["message"]["content"]
    mistral = front_door_chat(tailnet, "mistral", CLIENT_KEYS["globex"])
    assert mistral.status_code == 200 and f"{tailnet.nodes['hab']}:11434" in mistral.headers[
        "x-litellm-model-api-base"]


def test_tailnet_per_client_keys(tailnet: api.Lab) -> None:
    assert front_door_chat(tailnet, "llama3", None).status_code == 401
    assert front_door_chat(tailnet, "llama3", "sk-client-unknown").status_code == 401
    for key in CLIENT_KEYS.values():
        assert front_door_chat(tailnet, "llama3", key).status_code == 200


def test_tailnet_allowlist_turns_other_lab_addresses_away(tailnet: api.Lab) -> None:
    # The controller (198.18.0.1) is on the lab's allowlist; hab is a lab address that is not.
    assert front_door_chat(tailnet, "llama3", CLIENT_KEYS["acme"]).status_code == 200
    url = f"http://{tailnet.nodes['proxy']}/v1/models"
    outside = tailnet.exec_on("hab", ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                                      f"Authorization: Bearer {CLIENT_KEYS['acme']}", url])
    assert outside.stdout.strip() == "403"


def test_tailnet_preflight_checks_ollama_reach_and_exposure(tailnet: api.Lab) -> None:
    report = json.loads(swarm(tailnet, NAME, "preflight", "--phase", "3", "--output", "json").stdout)
    reach = {r["subject"]: r["status"] for r in report["results"] if r["check"] == "network"}
    assert reach.get("hab:11434 (ollama)") == "pass" and reach.get("hugo:11434 (ollama-hugo)") == "pass"
    hab = tailnet.nodes["hab"]
    stray = subprocess.Popen(  # a second server on hab, as a forgotten service would be
        ["ip", "netns", "exec", "lab-hab", "timeout", "120", sys.executable, "-m", "http.server",
         "8089", "--bind", hab], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: "8089" in tailnet.exec_on("hab", ["ss", "-ltnH"]).stdout, 20, "the stray listener")
        result = swarm(tailnet, NAME, "preflight", "--phase", "2", "--output", "json")
        exposure = [r for r in json.loads(result.stdout)["results"] if r["check"] == "ollama-acl"]
    finally:
        stray.kill()
        stray.wait(10)
    by_node = {r["node"]: r for r in exposure}
    assert by_node["hab"]["status"] == "warn" and "8089" in by_node["hab"]["message"]
    assert by_node["hugo"]["status"] == "pass"


def test_tailnet_a_revoked_client_key_stops_working(tailnet: api.Lab, tmp_path: Path) -> None:
    # Last in the module: it changes the deployed stack (globex's key is gone afterwards).
    data = yaml.safe_load(tailnet.inventory_path.read_text())
    del data["nodes"]["proxy"]["services"]["litellm"]["client_keys"]["globex"]
    revoked = tmp_path / "inventory.yml"
    revoked.write_text(yaml.safe_dump(data, sort_keys=False))
    ok(swarm(tailnet, NAME, "deploy", "--phase", "3", inventory=revoked))
    assert front_door_chat(tailnet, "llama3", CLIENT_KEYS["globex"]).status_code == 401
    assert front_door_chat(tailnet, "llama3", CLIENT_KEYS["acme"]).status_code == 200
