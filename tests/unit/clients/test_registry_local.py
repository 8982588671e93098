"""The registry client against a real `docker-registry` (distribution 2.x) on loopback.

The test pushes an OCI index (amd64 + arm64 + an attestation manifest), a Docker
manifest list and a single-platform image through the registry's own HTTP API, then
reads them back with `RegistryClient` exactly as preflight does with the lab mirror.
Skipped when the Debian `docker-registry` binary is not installed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from orchestrator.clients.images import parse_platform
from orchestrator.clients.registry import ImageIndex, PlatformCheck, RegistryClient
from orchestrator.errors import ServiceError

T = TypeVar("T")
BINARY = shutil.which("docker-registry")
pytestmark = pytest.mark.skipif(BINARY is None, reason="docker-registry not installed")

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def digest_of(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalRegistry:
    host: str
    process: subprocess.Popen[bytes]

    def push_blob(self, repo: str, body: bytes) -> dict[str, Any]:
        digest = digest_of(body)
        with httpx.Client(base_url=f"http://{self.host}") as http:
            started = http.post(f"/v2/{repo}/blobs/uploads/")
            assert started.status_code == 202, started.text
            location = started.headers["Location"]
            separator = "&" if "?" in location else "?"
            done = http.put(f"{location}{separator}digest={digest}", content=body)
            assert done.status_code == 201, done.text
        return {"digest": digest, "size": len(body)}

    def push_manifest(self, repo: str, reference: str, media_type: str, body: bytes) -> str:
        with httpx.Client(base_url=f"http://{self.host}") as http:
            answer = http.put(
                f"/v2/{repo}/manifests/{reference}",
                content=body,
                headers={"Content-Type": media_type},
            )
        assert answer.status_code == 201, answer.text
        return str(answer.headers["Docker-Content-Digest"])

    def push_image(self, repo: str, arch: str, docker: bool = False) -> tuple[bytes, str]:
        """One platform image (config + one layer); returns the manifest and its digest."""
        config = json.dumps({"architecture": arch, "os": "linux", "rootfs": {"type": "layers"}})
        config_desc = self.push_blob(repo, config.encode())
        layer_desc = self.push_blob(repo, f"layer for {arch}".encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": DOCKER_V2 if docker else OCI_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG if docker else OCI_CONFIG, **config_desc},
            "layers": [{"mediaType": DOCKER_LAYER if docker else OCI_LAYER, **layer_desc}],
        }
        body = json.dumps(manifest).encode()
        media = DOCKER_V2 if docker else OCI_MANIFEST
        return body, self.push_manifest(repo, digest_of(body), media, body)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    root = tmp_path_factory.mktemp("registry")
    host = f"127.0.0.1:{free_port()}"
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        f"http:\n  addr: {host}\n"
    )
    process = subprocess.Popen(
        [str(BINARY), "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_until_serving(host, process)
        yield LocalRegistry(host, process)
    finally:
        process.terminate()
        process.wait(timeout=20)


def wait_until_serving(host: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    delay = 0.02
    while time.monotonic() < deadline:
        assert process.poll() is None, "docker-registry exited"
        try:
            if httpx.get(f"http://{host}/v2/", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(delay)
        delay = min(delay * 2, 0.3)
    raise AssertionError("docker-registry did not start")


async def read(host: str, ref: str) -> ImageIndex:
    async with RegistryClient(insecure=[host]) as client:
        return await client.platforms(ref)


def test_oci_index_with_attestation(registry: LocalRegistry) -> None:
    repo = "library/redis"
    amd64_body, amd64 = registry.push_image(repo, "amd64")
    arm64_body, arm64 = registry.push_image(repo, "arm64")
    attestation_body, attestation = registry.push_image(repo, "unknown")
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": amd64, "size": len(amd64_body),
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": OCI_MANIFEST, "digest": arm64, "size": len(arm64_body),
             "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
            {"mediaType": OCI_MANIFEST, "digest": attestation, "size": len(attestation_body),
             "platform": {"architecture": "unknown", "os": "unknown"},
             "annotations": {"vnd.docker.reference.type": "attestation-manifest",
                             "vnd.docker.reference.digest": amd64}},
        ],
    }  # fmt: skip
    index_digest = registry.push_manifest(repo, "7-alpine", OCI_INDEX, json.dumps(index).encode())

    result = run(read(registry.host, f"{registry.host}/library/redis:7-alpine"))
    assert [str(p) for p in result.platforms] == ["linux/amd64", "linux/arm64"]
    assert result.digest == index_digest
    assert result.pinned == f"{registry.host}/library/redis@{index_digest}"
    arm = result.find(parse_platform("linux/arm64"))
    assert arm is not None and arm.digest == arm64


def test_docker_manifest_list_and_single_platform_image(registry: LocalRegistry) -> None:
    repo = "vllm/vllm-openai"
    amd64_body, amd64 = registry.push_image(repo, "amd64", docker=True)
    listing = {
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [
            {"mediaType": DOCKER_V2, "digest": amd64, "size": len(amd64_body),
             "platform": {"architecture": "amd64", "os": "linux"}},
        ],
    }  # fmt: skip
    registry.push_manifest(repo, "v0.6.3", DOCKER_LIST, json.dumps(listing).encode())
    registry.push_manifest(repo, "v0.6.3-single", DOCKER_V2, amd64_body)

    async def scenario() -> tuple[PlatformCheck, PlatformCheck]:
        async with RegistryClient(insecure=[registry.host]) as client:
            listed = await client.check(f"{registry.host}/{repo}:v0.6.3", "linux/arm64")
            single = await client.check(f"{registry.host}/{repo}:v0.6.3-single", "linux/amd64")
            return listed, single

    listed, single = run(scenario())
    assert not listed.ok and [str(p) for p in listed.offered] == ["linux/amd64"]
    assert single.ok and single.digest == amd64


def test_real_not_found_answers(registry: LocalRegistry) -> None:
    with pytest.raises(ServiceError, match="no-such-tag not found"):
        run(read(registry.host, f"{registry.host}/library/redis:no-such-tag"))
    with pytest.raises(ServiceError, match="not found|does not exist"):
        run(read(registry.host, f"{registry.host}/nobody/nothing:1"))


def test_stopped_mirror_is_unreachable(tmp_path: Path) -> None:
    host = f"127.0.0.1:{free_port()}"  # nothing listens here
    with pytest.raises(ServiceError, match=f"registry {host} unreachable: is the mirror running"):
        run(read(host, f"{host}/library/redis:7-alpine"))
