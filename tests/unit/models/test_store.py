"""The model store's commands, run for real by a local shell (the commands a node runs over SSH):
install checks every file against its pin, a listing reads the manifests back, hashing names the
files that are missing or changed, gc finds what kept releases mount."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from orchestrator.commands import models as mcmd
from orchestrator.models.gc import NodeModels, parse_references, read_references, removal_paths
from orchestrator.models.snapshot import Snapshot, WeightFile, loads
from orchestrator.models.store import check_files, read_store
from orchestrator.models.transfer import Endpoint, install
from orchestrator.render.weights import WeightsPin
from orchestrator.transport.local import LocalTransport

PIN = WeightsPin("acme/tiny-7b", "a" * 40)
FILES = {"config.json": b'{"model_type": "llama"}\n', "model-00001-of-00002.safetensors": b"\x01" * 5000,
         "model-00002-of-00002.safetensors": b"\x02" * 3000, "x; rm -rf ~ 'q'.json": b"{}\n"}


def snapshot() -> Snapshot:
    return Snapshot(PIN, tuple(WeightFile(n, len(b), hashlib.sha256(b).hexdigest()) for n, b in sorted(FILES.items())))


class FakeNode:
    name = "n1"
    deploy_root = ""


def stage_locally(root: Path, files: dict[str, bytes]) -> list[str]:
    """Receive the files into the revision's temp dir and install it; the problems named."""
    transport = LocalTransport("n1")
    final = PIN.store_dir(str(root))
    tmp = final + mcmd.TMP_SUFFIX

    async def run() -> list[str]:
        await transport.run(mcmd.start_tmp(tmp))
        for name, body in files.items():
            await transport.run(mcmd.receive_file(tmp, name), input=body)
        endpoint = Endpoint(FakeNode(), transport)  # type: ignore[arg-type]
        return [str(p) for p in await install(endpoint, snapshot(), tmp, final)]

    return asyncio.run(run())


def test_an_installed_revision_is_listed_with_its_manifest_and_free_space(tmp_path: Path) -> None:
    assert stage_locally(tmp_path, FILES) == []
    store = asyncio.run(read_store(LocalTransport("n1"), str(tmp_path)))
    assert store.has(PIN) and store.held[PIN].snapshot == snapshot()
    assert store.held_bytes == sum(len(b) for b in FILES.values())
    assert store.free_bytes is not None and store.free_bytes > 0 and store.partial == ()
    assert loads((Path(PIN.store_dir(str(tmp_path))) / mcmd.MANIFEST).read_bytes()) == snapshot()


def test_a_copy_that_does_not_check_out_is_not_installed_and_names_each_file(tmp_path: Path) -> None:
    bad = dict(FILES)
    bad["model-00002-of-00002.safetensors"] = b"\x02" * 2999 + b"\x03"
    del bad["config.json"]
    problems = stage_locally(tmp_path, bad)
    assert problems[0] == "config.json: missing"
    assert problems[1].startswith("model-00002-of-00002.safetensors: sha256 ") and ", pinned " in problems[1]
    assert not Path(PIN.store_dir(str(tmp_path))).exists()
    store = asyncio.run(read_store(LocalTransport("n1"), str(tmp_path)))
    assert not store.has(PIN) and store.partial == (PIN.store_dir(str(tmp_path)) + ".tmp",)


def test_hashing_a_staged_revision_names_a_corrupted_shard(tmp_path: Path) -> None:
    assert stage_locally(tmp_path, FILES) == []
    shard = Path(PIN.store_dir(str(tmp_path))) / "model-00001-of-00002.safetensors"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))   # same size, one byte flipped
    (Path(PIN.store_dir(str(tmp_path))) / "config.json").unlink()
    problems = asyncio.run(check_files(LocalTransport("n1"), PIN.store_dir(str(tmp_path)), snapshot()))
    assert [p.name for p in problems] == ["config.json", "model-00001-of-00002.safetensors"]
    assert problems[0].problem == "missing" and problems[1].problem.startswith("sha256 ")


def test_gc_keeps_what_a_kept_release_mounts_and_removes_the_rest(tmp_path: Path) -> None:
    root = str(tmp_path)
    assert stage_locally(tmp_path, FILES) == []
    other = WeightsPin("acme/old-model", "b" * 40)
    Path(other.store_dir(root)).mkdir(parents=True)
    release = tmp_path / "releases" / "20261206T100000Z-abcd1234"
    release.mkdir(parents=True)
    (release / "compose.yml").write_text(f"    volumes:\n    - {PIN.store_dir(root)}:/models/{PIN.repo}:ro\n")
    transport = LocalTransport("n1")
    refs = asyncio.run(read_references(transport, root))
    assert refs == {PIN: ("20261206T100000Z-abcd1234",)}
    store = asyncio.run(read_store(transport, root))
    models = NodeModels(store, refs)
    assert removal_paths(models, set()) == [other.store_dir(root)]
    assert removal_paths(models, {other}) == []   # placed there now: staged ahead of a deploy
    asyncio.run(transport.run(mcmd.remove_dirs(removal_paths(models, set()))))
    assert not Path(other.store_dir(root)).exists() and Path(PIN.store_dir(root)).exists()
    assert not (tmp_path / "models" / "acme" / "old-model").exists()


def test_both_hash_outputs_parse_to_the_same_answer() -> None:
    digest = "ab" * 32
    assert mcmd.parse_hashes(f"{digest} *model.safetensors\n{digest}  config.json\n") == \
        {"model.safetensors": digest, "config.json": digest}


def test_references_read_every_release_and_ignore_other_paths() -> None:
    root = "/opt/ai-swarm"
    text = (f"r1     - {root}/models/org/a/{'1' * 40}:/models/org/a:ro\n"
            f"r2     - {root}/models/org/a/{'1' * 40}:/models/org/a:ro\n"
            f".tmp-r3     - /srv/models/org/b/{'2' * 40}:/models/org/b:ro\n")
    assert parse_references(root, text) == {WeightsPin("org/a", "1" * 40): ("r1", "r2")}
