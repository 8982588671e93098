"""Container image references, the registry mirror rule and platform names.

An image reference names a registry host, a repository path, and a tag and/or digest
(`ghcr.io/open-webui/open-webui:main`, `postgres@sha256:...`). Docker Hub is the default
registry (`docker.io`) and its official images live under `library/`. With a mirror,
a ref is pulled as `<mirror>/<repository path>` (docs/contracts.md).

Platforms are `os/architecture[/variant]` as registries and `docker --platform` spell
them; inventory architectures (`amd64`, `arm64`) and `uname -m` answers map onto them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from orchestrator.errors import InputError

DOCKER_HUB = "docker.io"
DOCKER_HUB_API_HOST = "registry-1.docker.io"
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
DEFAULT_TAG = "latest"

# Grammar from distribution/reference (reference.go), anchored.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_HOST_RE = re.compile(
    r"^(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
    r"(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*"
    r"|\[[0-9a-fA-F:.]+\])(?::[0-9]{1,5})?$"
)
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$", re.ASCII)
_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[0-9a-fA-F]{32,}$")
_NAME_MAX = 255


@dataclass(frozen=True)
class ImageRef:
    """A parsed image reference; `registry` is normalised (`docker.io` for Docker Hub)."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What goes after `/manifests/` in the registry API: digest, else tag, else latest."""
        return self.digest or self.tag or DEFAULT_TAG

    @property
    def api_host(self) -> str:
        """Host serving the registry HTTP API (`registry-1.docker.io` for Docker Hub)."""
        return DOCKER_HUB_API_HOST if self.registry == DOCKER_HUB else self.registry

    @property
    def is_docker_hub(self) -> bool:
        return self.registry == DOCKER_HUB

    def with_registry(self, registry: str) -> ImageRef:
        return ImageRef(_normalise_host(registry), self.repository, self.tag, self.digest)

    def pinned(self, digest: str) -> str:
        """`registry/repository@digest`: the ref a deploy pins after a check."""
        return f"{self.registry}/{self.repository}@{digest}"

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_image_ref(ref: str) -> ImageRef:
    """Parse `ref` the way docker does; raise InputError naming the bad part."""
    if not ref or ref != ref.strip():
        raise InputError(f"image reference {ref!r}: empty or surrounded by spaces")
    name, digest = _split_digest(ref)
    name, tag = _split_tag(name, ref)
    registry, repository = _split_registry(name)
    _check_repository(repository, ref)
    return ImageRef(registry, repository, tag, digest)


def mirrored(ref: str, mirror: str | None) -> str:
    """The ref to pull: unchanged without a mirror, else `<mirror>/<repository path>`."""
    if not mirror:
        return ref
    parsed = parse_image_ref(ref)
    host = _check_mirror(mirror)
    text = f"{host}/{parsed.repository}"
    if parsed.tag:
        text += f":{parsed.tag}"
    if parsed.digest:
        text += f"@{parsed.digest}"
    return text


def _split_digest(ref: str) -> tuple[str, str | None]:
    if "@" not in ref:
        return ref, None
    name, digest = ref.split("@", 1)
    if not _DIGEST_RE.match(digest):
        raise InputError(
            f"image reference {ref!r}: bad digest {digest!r}",
            hint="a digest looks like sha256:<64 hex digits>",
        )
    return name, digest


def _split_tag(name: str, ref: str) -> tuple[str, str | None]:
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon <= slash:  # a colon before the last slash is a registry port
        return name, None
    tag = name[colon + 1 :]
    if not _TAG_RE.match(tag):
        raise InputError(
            f"image reference {ref!r}: bad tag {tag!r}",
            hint="tags are up to 128 letters, digits, '_', '.', '-' and do not start with '.' or '-'",
        )
    return name[:colon], tag


def _split_registry(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if sep and _looks_like_host(first):
        registry = _normalise_host(first)
        path = rest
    else:
        registry, path = DOCKER_HUB, name
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    return registry, path


def _looks_like_host(component: str) -> bool:
    return (
        "." in component
        or ":" in component
        or component == "localhost"
        or (component != component.lower())
    )


def _normalise_host(host: str) -> str:
    if not _HOST_RE.match(host):
        raise InputError(f"registry host {host!r} is not a host[:port]")
    return DOCKER_HUB if host.lower() in _DOCKER_HUB_ALIASES else host


def _check_repository(repository: str, ref: str) -> None:
    if not _PATH_RE.match(repository):
        raise InputError(
            f"image reference {ref!r}: bad repository path {repository!r}",
            hint="repository paths are lowercase letters, digits and '.', '_', '-' separated by '/'",
        )
    if len(repository) > _NAME_MAX:
        raise InputError(f"image reference {ref!r}: repository path longer than {_NAME_MAX}")


def _check_mirror(mirror: str) -> str:
    if "://" in mirror or "/" in mirror:
        raise InputError(
            f"registry.mirror {mirror!r}: expected HOST:PORT",
            hint='write the mirror without scheme or path, e.g. "198.18.0.1:5000"',
        )
    if not _HOST_RE.match(mirror):
        raise InputError(f"registry.mirror {mirror!r}: expected HOST:PORT")
    return mirror


# --- platforms ---------------------------------------------------------------------

ARCH_PLATFORMS: dict[str, str] = {"amd64": "linux/amd64", "arm64": "linux/arm64"}
_UNAME_ARCH: dict[str, str] = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
}
# Variants that mean "the baseline" for an architecture, so `linux/arm64` and
# `linux/arm64/v8` name the same platform (containerd's platforms.Normalize does this).
_DEFAULT_VARIANT: dict[str, str] = {"arm64": "v8", "amd64": "v1"}


@dataclass(frozen=True)
class Platform:
    """`os/architecture[/variant]`, with the baseline variant normalised away."""

    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def of(cls, os: str, architecture: str, variant: str | None = None) -> Platform:
        if variant and _DEFAULT_VARIANT.get(architecture) == variant:
            variant = None
        return cls(os, architecture, variant or None)

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text


def parse_platform(text: str) -> Platform:
    """Parse `linux/arm64` or `linux/arm/v7`; raise InputError otherwise."""
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise InputError(
            f"platform {text!r}: expected os/architecture[/variant]", hint="e.g. linux/arm64"
        )
    return Platform.of(parts[0], parts[1], parts[2] if len(parts) == 3 else None)


def platform_for_arch(arch: str) -> Platform:
    """Inventory architecture (`amd64`, `arm64`) -> its Linux platform."""
    if arch not in ARCH_PLATFORMS:
        raise InputError(
            f"architecture {arch!r} is not supported",
            hint=f"use one of: {', '.join(sorted(ARCH_PLATFORMS))}",
        )
    return parse_platform(ARCH_PLATFORMS[arch])


def arch_from_uname(machine: str) -> str | None:
    """`uname -m` answer (`x86_64`, `aarch64`) -> inventory architecture, None if unknown."""
    return _UNAME_ARCH.get(machine.strip().lower())
