"""Image reference parsing, the mirror rule (docs/contracts.md) and platform names."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.clients.images import (
    ImageRef,
    Platform,
    arch_from_uname,
    mirrored,
    parse_image_ref,
    parse_platform,
    platform_for_arch,
)
from orchestrator.errors import InputError

DIGEST = "sha256:" + "ab" * 32
MIRROR = "198.18.0.1:5000"


@pytest.mark.parametrize(
    ("ref", "registry", "repository", "tag", "digest"),
    [
        ("postgres:15-alpine", "docker.io", "library/postgres", "15-alpine", None),
        ("postgres", "docker.io", "library/postgres", None, None),
        ("hashicorp/consul:1.17", "docker.io", "hashicorp/consul", "1.17", None),
        ("docker.io/library/redis:7-alpine", "docker.io", "library/redis", "7-alpine", None),
        ("index.docker.io/library/redis:7", "docker.io", "library/redis", "7", None),
        ("docker.io/redis", "docker.io", "library/redis", None, None),
        ("ghcr.io/open-webui/open-webui:main", "ghcr.io", "open-webui/open-webui", "main", None),
        (
            "ghcr.io/berriai/litellm:main-v1.55.8",
            "ghcr.io",
            "berriai/litellm",
            "main-v1.55.8",
            None,
        ),
        ("198.18.0.1:5000/library/postgres:15", "198.18.0.1:5000", "library/postgres", "15", None),
        ("localhost/foo", "localhost", "foo", None, None),
        ("localhost:5000/a/b/c:v1", "localhost:5000", "a/b/c", "v1", None),
        (f"redis@{DIGEST}", "docker.io", "library/redis", None, DIGEST),
        (f"ghcr.io/a/b:1.0@{DIGEST}", "ghcr.io", "a/b", "1.0", DIGEST),
        ("[::1]:5000/x:y", "[::1]:5000", "x", "y", None),
    ],
)
def test_parse_image_ref(
    ref: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    assert parse_image_ref(ref) == ImageRef(registry, repository, tag, digest)


def test_reference_and_api_host() -> None:
    hub = parse_image_ref("postgres")
    assert hub.reference == "latest"
    assert hub.api_host == "registry-1.docker.io"
    assert parse_image_ref(f"ghcr.io/a/b:1@{DIGEST}").reference == DIGEST
    assert parse_image_ref("ghcr.io/a/b:1").api_host == "ghcr.io"


def test_str_and_pinned() -> None:
    ref = parse_image_ref("postgres:15-alpine")
    assert str(ref) == "docker.io/library/postgres:15-alpine"
    assert ref.pinned(DIGEST) == f"docker.io/library/postgres@{DIGEST}"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        " redis",
        "Redis/UPPER",
        "redis:",
        "redis:-bad",
        "redis@sha256:short",
        "a//b",
        "x; rm -rf /",
        "ghcr.io/",
        "redis:tag with space",
        "ré dis",
    ],
)
def test_parse_rejects_bad_refs_with_input_error(bad: str) -> None:
    with pytest.raises(InputError):
        parse_image_ref(bad)


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("postgres:15-alpine", "198.18.0.1:5000/library/postgres:15-alpine"),
        ("ghcr.io/open-webui/open-webui:main", "198.18.0.1:5000/open-webui/open-webui:main"),
        ("hashicorp/vault:1.15", "198.18.0.1:5000/hashicorp/vault:1.15"),
        ("docker.io/library/redis:7-alpine", "198.18.0.1:5000/library/redis:7-alpine"),
        (f"redis@{DIGEST}", f"198.18.0.1:5000/library/redis@{DIGEST}"),
        ("vllm/vllm-openai:v0.6.3-broken", "198.18.0.1:5000/vllm/vllm-openai:v0.6.3-broken"),
    ],
)
def test_mirrored_follows_the_contract(ref: str, expected: str) -> None:
    assert mirrored(ref, MIRROR) == expected


def test_mirrored_without_mirror_is_unchanged() -> None:
    assert mirrored("postgres:15-alpine", None) == "postgres:15-alpine"
    assert mirrored("postgres:15-alpine", "") == "postgres:15-alpine"


def test_mirrored_is_idempotent() -> None:
    once = mirrored("postgres:15-alpine", MIRROR)
    assert mirrored(once, MIRROR) == once


@pytest.mark.parametrize("bad", ["http://198.18.0.1:5000", "198.18.0.1:5000/path", "a b"])
def test_mirrored_rejects_a_mirror_that_is_not_host_port(bad: str) -> None:
    with pytest.raises(InputError, match="registry.mirror"):
        mirrored("redis:7", bad)


def test_platforms() -> None:
    assert str(platform_for_arch("amd64")) == "linux/amd64"
    assert str(platform_for_arch("arm64")) == "linux/arm64"
    assert parse_platform("linux/arm64/v8") == parse_platform("linux/arm64")
    assert parse_platform("linux/arm/v7") == Platform("linux", "arm", "v7")
    assert str(parse_platform("linux/arm/v7")) == "linux/arm/v7"
    with pytest.raises(InputError):
        platform_for_arch("riscv64")
    with pytest.raises(InputError):
        parse_platform("linux")


@pytest.mark.parametrize(
    ("machine", "arch"),
    [
        ("x86_64", "amd64"),
        ("aarch64", "arm64"),
        ("arm64", "arm64"),
        ("x86_64\n", "amd64"),
        ("armv7l", None),
        ("", None),
    ],
)
def test_arch_from_uname(machine: str, arch: str | None) -> None:
    assert arch_from_uname(machine) == arch


_component = st.from_regex(r"[a-z0-9]{1,8}(?:[._-][a-z0-9]{1,8})?", fullmatch=True)
_tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)


@given(
    host=st.sampled_from(["", "ghcr.io/", "198.18.0.1:5000/", "localhost:5000/", "docker.io/"]),
    path=st.lists(_component, min_size=1, max_size=3),
    tag=st.none() | _tag,
    digest=st.none() | st.just(DIGEST),
)
def test_parse_round_trips_through_str(
    host: str, path: list[str], tag: str | None, digest: str | None
) -> None:
    ref = host + "/".join(path) + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    parsed = parse_image_ref(ref)
    assert parse_image_ref(str(parsed)) == parsed
    assert parsed.tag == tag and parsed.digest == digest
    assert mirrored(ref, MIRROR).startswith(f"{MIRROR}/{parsed.repository}")


@given(st.text(max_size=60))
def test_parse_never_crashes_with_anything_but_input_error(text: str) -> None:
    try:
        parse_image_ref(text)
    except InputError:
        pass
