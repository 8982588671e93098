"""Keeping a digest in the fleet's own registry: `RegistryClient.copy` between two real
`docker-registry` processes on loopback (an "upstream" and the fleet's mirror), and `digest` (one
HEAD) for the tag check. Skipped when the Debian `docker-registry` binary is not installed."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.clients.images import parse_image_ref
from orchestrator.clients.registry import RegistryClient
from orchestrator.clients.tags import head_digests
from orchestrator.errors import ServiceError
from tests.unit.clients.test_registry_local import (
    BINARY,
    OCI_INDEX,
    LocalRegistry,
    digest_of,
    free_port,
    wait_until_serving,
)

pytestmark = pytest.mark.skipif(BINARY is None, reason="docker-registry not installed")


def start(root: Path) -> LocalRegistry:
    host = f"127.0.0.1:{free_port()}"
    config = root / "config.yml"
    root.mkdir(parents=True, exist_ok=True)
    config.write_text(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
                      f"http:\n  addr: {host}\n")
    process = subprocess.Popen([str(BINARY), "serve", str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    wait_until_serving(host, process)
    return LocalRegistry(host, process)


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[LocalRegistry, LocalRegistry]]:
    upstream, mirror = start(tmp_path / "upstream"), start(tmp_path / "mirror")
    yield upstream, mirror
    for reg in (upstream, mirror):
        if reg.process.poll() is None:
            reg.process.terminate()
            reg.process.wait(timeout=20)


def push_index(reg: LocalRegistry, repo: str, tag: str) -> str:
    entries = []
    for arch in ("amd64", "arm64"):
        body, digest = reg.push_image(repo, arch)
        entries.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest,
                        "size": len(body), "platform": {"os": "linux", "architecture": arch}})
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
    return reg.push_manifest(repo, tag, OCI_INDEX, index) or digest_of(index)


def client(*regs: LocalRegistry) -> RegistryClient:
    return RegistryClient(insecure=[r.host for r in regs])


def test_a_pinned_image_is_copied_whole_and_then_pulls_from_the_mirror_with_upstream_stopped(
        two: tuple[LocalRegistry, LocalRegistry]) -> None:
    upstream, mirror = two
    digest = push_index(upstream, "vllm/vllm-openai", "v0.6.3")

    async def copy() -> tuple[str, int, int]:
        async with client(upstream, mirror) as c:
            head = await c.digest(f"{upstream.host}/vllm/vllm-openai:v0.6.3")
            first = await c.copy(parse_image_ref(f"{upstream.host}/vllm/vllm-openai@{head}"), mirror.host,
                                 tag="v0.6.3")
            again = await c.copy(parse_image_ref(f"{upstream.host}/vllm/vllm-openai@{head}"), mirror.host)
            return head, first, again

    head, first, again = asyncio.run(copy())
    assert head == digest and first > 0 and again == 0     # the second copy moves nothing
    upstream.process.terminate()
    upstream.process.wait(timeout=20)

    async def from_mirror() -> tuple[str, list[str], dict]:  # type: ignore[type-arg]
        async with client(upstream, mirror) as c:
            index = await c.platforms(f"{mirror.host}/vllm/vllm-openai@{digest}")
            config = await c.config(f"{mirror.host}/vllm/vllm-openai:v0.6.3", "linux/arm64")
            with pytest.raises(ServiceError, match="unreachable"):
                await c.digest(f"{upstream.host}/vllm/vllm-openai:v0.6.3")
            return index.digest, [str(p) for p in index.platforms], config

    got, platforms, config = asyncio.run(from_mirror())
    assert got == digest and platforms == ["linux/amd64", "linux/arm64"] and config["architecture"] == "arm64"


def test_a_moved_tag_is_a_new_digest_to_one_head(two: tuple[LocalRegistry, LocalRegistry]) -> None:
    upstream, _ = two
    first = push_index(upstream, "acme/app", "1.0")
    upstream.push_image("acme/app", "s390x")   # another image under the same tag
    body, moved = upstream.push_image("acme/app", "ppc64le")
    upstream.push_manifest("acme/app", "1.0", "application/vnd.oci.image.manifest.v1+json", body)

    async def head() -> str:
        async with client(upstream) as c:
            return await c.digest(f"{upstream.host}/acme/app:1.0")

    assert asyncio.run(head()) == moved != first
    # the fast path's stdlib HEAD gives the same answer, and None where no registry answers
    assert head_digests([f"{upstream.host}/acme/app:1.0", "127.0.0.1:9/acme/app:1.0"],
                        insecure=[upstream.host, "127.0.0.1:9"]) == {f"{upstream.host}/acme/app:1.0": moved,
                                                                      "127.0.0.1:9/acme/app:1.0": None}
