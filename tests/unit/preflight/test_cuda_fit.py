"""The newest tag that fits a driver: read through the registry API (image index -> platform manifest
-> config env) and the tag list, the network boundary replaced by `httpx.MockTransport` serving
OCI documents as a registry does (the client is the real one)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import httpx

from orchestrator.clients.registry import OCI_INDEX, OCI_MANIFEST, RegistryClient, config_env
from orchestrator.facts.gpu import required_cuda
from orchestrator.preflight.run import newest_fit

HOST = "reg.lab:5000"


def digest(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


class Registry:
    """Tags of one repository, each an OCI index with one linux/amd64 image whose config has `env`."""

    def __init__(self, tags: dict[str, list[str]]) -> None:
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, bytes] = {}
        self.requests: list[str] = []
        for tag, env in tags.items():
            config = json.dumps({"os": "linux", "architecture": "amd64", "config": {"Env": env}}).encode()
            self.blobs[digest(config)] = config
            manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [],
                                   "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                              "digest": digest(config), "size": len(config)}}).encode()
            self.manifests[digest(manifest)] = manifest
            index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": digest(manifest), "size": len(manifest),
                 "platform": {"os": "linux", "architecture": "amd64"}}]}).encode()
            self.manifests[tag] = self.manifests[digest(index)] = index

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.requests.append(path)
        repo_path = "/v2/vllm/vllm-openai/"
        rest = path[len(repo_path):]
        if rest == "tags/list":
            tags = [t for t in self.manifests if not t.startswith("sha256:")]
            return httpx.Response(200, json={"name": "vllm/vllm-openai", "tags": tags})
        kind, _, ref = rest.partition("/")
        table: dict[str, Any] = self.manifests if kind == "manifests" else self.blobs
        if ref not in table:
            return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})
        body = table[ref]
        headers = {"Docker-Content-Digest": digest(body),
                   "Content-Type": json.loads(body).get("mediaType", "application/json")}
        return httpx.Response(200, content=body, headers=headers)


CUDA = {"12.4": ["CUDA_VERSION=12.4.1", "NVIDIA_REQUIRE_CUDA=cuda>=12.4 brand=tesla,driver>=470,driver<471"],
        "12.1": ["CUDA_VERSION=12.1.0", "NVIDIA_REQUIRE_CUDA=cuda>=12.1 brand=tesla,driver>=470,driver<471"],
        "11.8": ["CUDA_VERSION=11.8.0", "NVIDIA_REQUIRE_CUDA=cuda>=11.8"]}


def fits(registry: Registry, image: str, cuda: str) -> str | None:
    async def run() -> str | None:
        async with RegistryClient(transport=httpx.MockTransport(registry), insecure=[HOST]) as client:
            return await newest_fit(client, image, "linux/amd64", cuda)

    return asyncio.run(run())


def test_the_newest_older_tag_whose_cuda_the_driver_runs() -> None:
    registry = Registry({"v0.6.3": CUDA["12.4"], "v0.6.2": CUDA["12.4"], "v0.5.4": CUDA["12.4"],
                         "v0.4.0": CUDA["12.1"], "v0.2.7": CUDA["11.8"], "latest": CUDA["12.4"],
                         "v0.7.0": CUDA["12.1"], "v0.6.3-broken": CUDA["12.1"]})
    assert fits(registry, f"{HOST}/vllm/vllm-openai:v0.6.3", "12.2") == "vllm/vllm-openai:v0.4.0"
    assert fits(registry, f"{HOST}/vllm/vllm-openai:v0.6.3", "12.0") == "vllm/vllm-openai:v0.2.7"
    assert fits(registry, f"{HOST}/vllm/vllm-openai:v0.6.3", "11.4") is None


def test_the_config_env_is_read_for_the_nodes_platform() -> None:
    registry = Registry({"v0.6.3": CUDA["12.4"]})

    async def run() -> list[str]:
        async with RegistryClient(transport=httpx.MockTransport(registry), insecure=[HOST]) as client:
            return config_env(await client.config(f"{HOST}/vllm/vllm-openai:v0.6.3", "linux/amd64"))

    assert required_cuda(asyncio.run(run())) == "12.4"
