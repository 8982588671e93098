"""Synthetic model repositories for the lab's hub stand-in (standins/hub.py).

`make_repo` writes one repository at one commit the way the hub holds a real one: a real
`config.json` (the model catalogue's config.json figures, roles/vllm/models.yml, when it
knows the model), `generation_config.json`, `tokenizer_config.json`, sharded safetensors of a
chosen size (valid files: an 8-byte header length, the JSON header, the tensor bytes) and
`model.safetensors.index.json` mapping every tensor to its shard. Weights are LFS files (the
hub serves them by sha256 from its content store), the rest are git files (git blob ids).
The bytes are pseudo-random from a seed, so the same call makes the same repository.
"""

from __future__ import annotations

import hashlib
import json
import random
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

META = ".meta.json"
LFS_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
_BLOCK = 1 << 20


@dataclass(frozen=True)
class RepoSpec:
    """A synthetic repository: its name, the commit to publish it at, its size in bytes."""

    repo: str
    revision: str | None = None
    total_bytes: int = 4 << 20
    shards: int = 2
    figures: Mapping[str, Any] | None = None   # catalogue config.json figures
    private: bool = False


def config_json(repo: str, figures: Mapping[str, Any] | None) -> dict[str, Any]:
    """A config.json as transformers writes it, from the catalogue's figures (or a small default)."""
    f = dict(figures or {"hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 4,
                         "num_attention_heads": 8, "num_key_value_heads": 8, "vocab_size": 32000,
                         "max_position_embeddings": 4096})
    model_type = _model_type(repo, f)
    config: dict[str, Any] = {
        "architectures": [_ARCHITECTURES[model_type]], "model_type": model_type, "torch_dtype": "float16",
        "hidden_act": "silu", "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "bos_token_id": 1,
        "eos_token_id": 2, "tie_word_embeddings": bool(f.get("tie_word_embeddings", False)),
    }
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings"):
        if f.get(key) is not None:
            config[key] = f[key]
    if f.get("num_experts"):
        config["num_local_experts"] = f["num_experts"]
        config["num_experts_per_tok"] = f.get("num_experts_per_tok", 2)
    if f.get("quantization") in ("gptq", "awq"):
        config["quantization_config"] = {"quant_method": f["quantization"], "bits": f.get("bits", 4),
                                         "group_size": f.get("group_size", 128)}
    return config


_ARCHITECTURES = {"mistral": "MistralForCausalLM", "mixtral": "MixtralForCausalLM", "llama": "LlamaForCausalLM",
                  "qwen2": "Qwen2ForCausalLM", "phi3": "Phi3ForCausalLM"}


def _model_type(repo: str, figures: Mapping[str, Any]) -> str:
    name = repo.lower()
    if figures.get("num_experts") or "mixtral" in name:
        return "mixtral"
    for key in ("qwen", "phi-3", "llama", "mistral"):
        if key in name:
            return {"qwen": "qwen2", "phi-3": "phi3"}.get(key, key)
    return "llama"


def safetensors_bytes(tensors: Mapping[str, int], rng: random.Random) -> tuple[bytes, dict[str, Any]]:
    """A safetensors header for uint8 tensors of the given sizes; returns (header bytes, header)."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, size in tensors.items():
        header[name] = {"dtype": "U8", "shape": [size], "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)   # the format pads the header to 8 bytes
    return struct.pack("<Q", len(text)) + text, header


def make_repo(root: Path, spec: RepoSpec) -> str:
    """Write the repository under `root` (hub stand-in layout) and return its commit."""
    rng = random.Random(f"{spec.repo}:{spec.total_bytes}:{spec.shards}")
    files: dict[str, bytes | Path] = {}
    config = config_json(spec.repo, spec.figures)
    files["config.json"] = _json(config)
    files["generation_config.json"] = _json({"bos_token_id": 1, "eos_token_id": 2, "_from_model_config": True})
    files["tokenizer_config.json"] = _json({"model_max_length": config["max_position_embeddings"],
                                            "tokenizer_class": "LlamaTokenizer"})
    staging = root / spec.repo / ".staging"
    staging.mkdir(parents=True, exist_ok=True)
    weight_map, total = _write_shards(staging, spec, rng)
    for shard in sorted({v for v in weight_map.values()}):
        files[shard] = staging / shard
    files["model.safetensors.index.json"] = _json({"metadata": {"total_size": total}, "weight_map": weight_map})
    entries = [_entry(name, body) for name, body in sorted(files.items())]
    commit = spec.revision or hashlib.sha1(json.dumps(entries, sort_keys=True).encode()).hexdigest()
    _place(root, spec, commit, files, entries, config)
    return commit


def _write_shards(staging: Path, spec: RepoSpec, rng: random.Random) -> tuple[dict[str, str], int]:
    per_shard = max(1, spec.total_bytes // spec.shards)
    weight_map: dict[str, str] = {}
    total = 0
    for i in range(spec.shards):
        name = f"model-{i + 1:05d}-of-{spec.shards:05d}.safetensors"
        tensors = {f"model.layers.{i}.mlp.weight": per_shard - per_shard // 4,
                   f"model.layers.{i}.self_attn.weight": per_shard // 4}
        head, _ = safetensors_bytes(tensors, rng)
        with (staging / name).open("wb") as out:
            out.write(head)
            left = sum(tensors.values())
            while left > 0:
                chunk = rng.randbytes(min(_BLOCK, left))
                out.write(chunk)
                left -= len(chunk)
        weight_map.update({t: name for t in tensors})
        total += sum(tensors.values())
    return weight_map, total


def _json(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def _entry(name: str, body: bytes | Path) -> dict[str, Any]:
    sha, size = _digest(body)
    lfs = name.endswith(LFS_SUFFIXES)
    return {"name": name, "size": size, "sha256": sha, "lfs": lfs, "blob_id": _blob_id(body, size, lfs, sha)}


def _digest(body: bytes | Path) -> tuple[str, int]:
    if isinstance(body, bytes):
        return hashlib.sha256(body).hexdigest(), len(body)
    h = hashlib.sha256()
    with body.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_BLOCK), b""):
            h.update(chunk)
    return h.hexdigest(), body.stat().st_size


def _blob_id(body: bytes | Path, size: int, lfs: bool, sha256: str) -> str:
    """Git's blob id: of the file itself, or for LFS of its pointer file (as the hub reports)."""
    data = (f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
            if lfs or not isinstance(body, bytes) else body)
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _place(root: Path, spec: RepoSpec, commit: str, files: Mapping[str, bytes | Path],
           entries: list[dict[str, Any]], config: dict[str, Any]) -> None:
    target = root / spec.repo / commit
    target.mkdir(parents=True, exist_ok=True)
    for name, body in files.items():
        if isinstance(body, bytes):
            (target / name).write_bytes(body)
        else:
            body.replace(target / name)
    (root / spec.repo / ".staging").rmdir()
    meta = {"repo": spec.repo, "commit": commit, "files": entries, "created": "2026-01-01T00:00:00.000Z",
            "config_summary": {"model_type": config["model_type"], "architectures": config["architectures"]}}
    (target / META).write_text(json.dumps(meta, indent=2))
    refs = root / spec.repo / "refs"
    refs.mkdir(exist_ok=True)
    (refs / "main").write_text(commit + "\n")
    private = root / spec.repo / "private"
    if spec.private:
        private.touch()
    else:
        private.unlink(missing_ok=True)
