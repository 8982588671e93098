"""OCI layers, manifests and indexes as the lab builds them."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from orchestrator.lab import images, oci


def test_layer_tar_is_deterministic_and_adds_parents() -> None:
    entries = [oci.file_entry("/usr/local/bin/x", "hi", 0o755), oci.symlink_entry("/bin/sh", "busybox")]
    first, second = oci.layer_tar(entries), oci.layer_tar(list(reversed(entries)))
    assert first == second
    names = tarfile.open(fileobj=io.BytesIO(first)).getnames()
    assert names == sorted(names)
    assert {"usr", "usr/local", "usr/local/bin", "usr/local/bin/x", "bin", "bin/sh"} == set(names)


def test_host_files_keep_their_mtime(tmp_path: Path) -> None:
    src = tmp_path / "mod.py"
    src.write_text("x = 1\n")
    import os

    os.utime(src, (1_600_000_000, 1_600_000_000))
    tar = tarfile.open(fileobj=io.BytesIO(oci.layer_tar([oci.host_file("/lib/mod.py", src)])))
    assert tar.getmember("lib/mod.py").mtime == 1_600_000_000


def test_layer_key_changes_with_content() -> None:
    a = oci.layer_key([oci.file_entry("/a", "1")])
    assert a == oci.layer_key([oci.file_entry("/a", "1")])
    assert a != oci.layer_key([oci.file_entry("/a", "2")])


def test_index_lists_platforms_with_arm64_variant() -> None:
    layer, _ = oci.compress_layer(oci.layer_tar([oci.file_entry("/a", "1")]))
    manifests = []
    for arch in ("amd64", "arm64"):
        config = oci.image_config(arch, oci.RuntimeConfig(cmd=("sh",)), [layer])
        blob = oci.Blob(oci.sha256_digest(config), len(config), oci.MEDIA_CONFIG)
        manifest = oci.manifest(blob, [layer])
        assert json.loads(manifest)["layers"][0]["digest"] == layer.blob.digest
        manifests.append((arch, oci.Blob(oci.sha256_digest(manifest), len(manifest),
                                         oci.MEDIA_MANIFEST)))
    index = json.loads(oci.index(manifests))
    assert index["mediaType"] == oci.MEDIA_INDEX
    platforms = [m["platform"] for m in index["manifests"]]
    assert platforms == [{"architecture": "amd64", "os": "linux"},
                         {"architecture": "arm64", "os": "linux", "variant": "v8"}]


def test_catalog_matches_the_contract_table() -> None:
    by_ref = {spec.ref: spec for spec in images.catalog()}
    assert by_ref["vllm/vllm-openai:v0.6.3"].platforms == ("amd64",)
    assert by_ref["vllm/vllm-openai:v0.6.3-broken"].platforms == ("amd64",)
    assert by_ref["redis:7-alpine"].platforms == ("amd64", "arm64")
    assert by_ref["postgres:15-alpine"].repo_path == "library/postgres:15-alpine"
    assert (by_ref["ghcr.io/open-webui/open-webui:v0.3.35"].repo_path
            == "open-webui/open-webui:v0.3.35")
    assert "SWARM_STANDIN_MODE=never-healthy" in (
        by_ref["vllm/vllm-openai:v0.6.3-broken"].runtime.env)
    # the CUDA the real images are built on (preflight's check against the driver)
    assert "CUDA_VERSION=12.4.1" in by_ref["vllm/vllm-openai:v0.6.3"].runtime.env
    assert "CUDA_VERSION=12.1.0" in by_ref["vllm/vllm-openai:v0.4.0"].runtime.env
    amd64_only = {s.ref for s in images.catalog() if s.platforms == ("amd64",)}
    assert amd64_only == {"vllm/vllm-openai:v0.6.3", "vllm/vllm-openai:v0.6.3.post1", "vllm/vllm-openai:v0.6.3-broken", "vllm/vllm-openai:v0.4.0",
                          "utkuozdemir/nvidia_gpu_exporter:1.2.0",
                          "ghcr.io/sillytavern/sillytavern-extras:latest",
                          "metabase/metabase:v0.50.4"}


def test_built_image_shares_layers_across_platforms(tmp_path: Path) -> None:
    spec = images.ImageSpec("x/y:1", ("amd64", "arm64"), (),
                            oci.RuntimeConfig(cmd=("true",)), extra=(oci.file_entry("/a", "1"),))
    built = images.Builder(images.LayerCache(tmp_path)).build(spec)
    amd, arm = (json.loads(built.manifests[a]) for a in ("amd64", "arm64"))
    assert amd["layers"] == arm["layers"] and amd["config"] != arm["config"]
    assert json.loads(built.configs["arm64"])["architecture"] == "arm64"


def test_layer_cache_reuses_blobs(tmp_path: Path) -> None:
    cache = images.LayerCache(tmp_path)
    entries = [oci.file_entry("/a", "1")]
    first = cache.layer(entries)
    assert cache.blob_path(first.blob.digest).exists()
    assert cache.layer(entries) == first
