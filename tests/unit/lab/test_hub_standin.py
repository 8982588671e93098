"""The hub stand-in, driven by the real `huggingface_hub` client (as the Consul and Vault
stand-ins are driven by py-consul and hvac). Everything runs on 127.0.0.1, repositories of a
few hundred KB made by the lab's generator (orchestrator/lab/models.py)."""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

from orchestrator.lab import models as synthetic
from orchestrator.lab.standins import hub as standin

REPO = "TheBloke/Mistral-7B-Instruct-v0.2-GPTQ"
FIGURES = {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
           "num_key_value_heads": 8, "vocab_size": 32000, "max_position_embeddings": 32768,
           "quantization": "gptq", "bits": 4, "group_size": 128}


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[tuple[standin.HubServer, str]]:
    commit = synthetic.make_repo(tmp_path / "repos", synthetic.RepoSpec(REPO, total_bytes=300_000, shards=3,
                                                                        figures=FIGURES))
    synthetic.make_repo(tmp_path / "repos", synthetic.RepoSpec("acme/private-model", total_bytes=10_000,
                                                               shards=1, private=True))
    server = standin.serve("127.0.0.1", 0, tmp_path / "repos", token="hf_lab_token")
    yield server, commit
    server.shutdown()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_model_info_with_files_metadata_gives_each_weight_file_its_sha256_and_size(hub: tuple[standin.HubServer, str]) -> None:
    server, commit = hub
    info = HfApi(endpoint=server.url).model_info(REPO, revision="main", files_metadata=True)
    assert info.sha == commit
    files = {s.rfilename: s for s in info.siblings or []}
    assert set(files) == {"config.json", "generation_config.json", "tokenizer_config.json",
                          "model.safetensors.index.json", "model-00001-of-00003.safetensors",
                          "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"}
    shard = files["model-00002-of-00003.safetensors"]
    assert shard.lfs is not None and shard.lfs.size == shard.size and len(shard.lfs.sha256) == 64
    assert files["config.json"].lfs is None and files["config.json"].size


def test_a_pinned_commit_resolves_to_itself_and_an_unknown_one_is_the_clients_revision_error(
        hub: tuple[standin.HubServer, str]) -> None:
    server, commit = hub
    api = HfApi(endpoint=server.url)
    assert api.model_info(REPO, revision=commit).sha == commit
    with pytest.raises(RevisionNotFoundError):
        api.model_info(REPO, revision="f" * 40)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("acme/nothing-here")


def test_hf_hub_download_follows_the_lfs_redirect_and_gets_the_bytes_the_metadata_names(
        hub: tuple[standin.HubServer, str], tmp_path: Path) -> None:
    server, commit = hub
    info = HfApi(endpoint=server.url).model_info(REPO, revision=commit, files_metadata=True)
    want = {s.rfilename: s.lfs.sha256 for s in info.siblings or [] if s.lfs}
    path = Path(hf_hub_download(REPO, "model-00001-of-00003.safetensors", revision=commit, endpoint=server.url,
                                local_dir=tmp_path / "out"))
    assert sha256(path) == want["model-00001-of-00003.safetensors"]
    # a valid safetensors file: header length, JSON header, then exactly the tensors' bytes
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    end = max(t["data_offsets"][1] for k, t in header.items() if k != "__metadata__")
    assert len(data) == 8 + length + end


def test_snapshot_download_gets_a_whole_revision_with_a_real_config_and_index(
        hub: tuple[standin.HubServer, str], tmp_path: Path) -> None:
    server, commit = hub
    folder = Path(snapshot_download(REPO, revision=commit, endpoint=server.url, cache_dir=tmp_path / "cache"))
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["MistralForCausalLM"]
    assert config["num_key_value_heads"] == 8 and config["quantization_config"]["quant_method"] == "gptq"
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)}
    assert folder.name == commit


def test_a_private_repository_needs_the_token(hub: tuple[standin.HubServer, str], tmp_path: Path) -> None:
    server, _ = hub
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=server.url, token=False).model_info("acme/private-model")
    info = HfApi(endpoint=server.url, token="hf_lab_token").model_info("acme/private-model")
    assert info.private is True


def test_ranges_resume_a_download_and_the_stats_count_bytes_served(hub: tuple[standin.HubServer, str]) -> None:
    server, commit = hub
    info = HfApi(endpoint=server.url).model_info(REPO, revision=commit, files_metadata=True)
    shard = next(s for s in info.siblings or [] if s.lfs)
    with httpx.Client(base_url=server.url) as http:
        before = http.get("/_standin/stats").json()["bytes_served"]
        part = http.get(f"{server.store.cdn}/lfs/{shard.lfs.sha256}", headers={"Range": "bytes=100-"})
        assert part.status_code == 206 and len(part.content) == shard.size - 100
        assert part.headers["Content-Range"] == f"bytes 100-{shard.size - 1}/{shard.size}"
        assert http.get("/_standin/stats").json()["bytes_served"] - before == shard.size - 100
