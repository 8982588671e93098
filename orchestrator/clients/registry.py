"""Which platforms a registry offers for an image, read from the registry HTTP API v2.

`RegistryClient.platforms(ref)` GETs `/v2/<repo>/manifests/<tag>` asking for an OCI
index, a Docker manifest list, an OCI manifest or a Docker v2 manifest. An index lists
one manifest per platform (attestation entries, `unknown/unknown`, are not platforms);
a single manifest names its platform only in its config blob, which is read too. The
answer carries the digest a deploy pins (`Docker-Content-Digest`, else sha256 of the
body), so what was checked is what runs.

Docker Hub and GHCR answer anonymous pulls with `401` + `WWW-Authenticate: Bearer
realm=...,service=...,scope=...`; the client fetches a token from the realm and
retries. A local mirror is plain HTTP when listed as insecure; basic auth is optional.
Many images are checked at once: the client is async, bounded by a semaphore, and
shares one request per image between concurrent callers.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import urljoin

import httpx

from orchestrator.clients.images import ImageRef, Platform, parse_image_ref, parse_platform
from orchestrator.errors import ServiceError, SwarmError
from orchestrator.secrets import Secret

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_ACCEPT = ", ".join((OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST))

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_BLOB_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[0-9a-fA-F]{32,}$")
_CHALLENGE_PARAM_RE = re.compile(r'(\w+)=(?:"([^"]*)"|([^,\s]*))')
_ATTESTATION = "attestation-manifest"


@dataclass(frozen=True)
class Credentials:
    """Basic-auth credentials for one registry host (sent to it, or to a token realm the
    inventory allows: `RegistryClient._may_send`)."""

    username: str
    password: Secret


@dataclass(frozen=True)
class PlatformManifest:
    """One runnable platform of an image and the digest of its manifest."""

    platform: Platform
    digest: str
    media_type: str


@dataclass(frozen=True)
class ImageIndex:
    """What a registry offers for one image: its digest and every runnable platform."""

    image: ImageRef
    digest: str
    media_type: str
    manifests: tuple[PlatformManifest, ...]

    @property
    def platforms(self) -> tuple[Platform, ...]:
        return tuple(m.platform for m in self.manifests)

    @property
    def pinned(self) -> str:
        """`registry/repository@sha256:...` of the index (or single manifest)."""
        return self.image.pinned(self.digest)

    def find(self, platform: Platform) -> PlatformManifest | None:
        return next((m for m in self.manifests if m.platform == platform), None)


class PlatformCheck(NamedTuple):
    """Answer of `RegistryClient.check`: is `platform` offered, the digest to pin, and
    every platform the image does offer (for the failure message)."""

    ok: bool
    digest: str
    offered: tuple[Platform, ...]


def config_env(config: dict[str, Any]) -> list[str]:
    """`KEY=value` items of an image config's `config.Env`."""
    inner = config.get("config")
    env = inner.get("Env") if isinstance(inner, dict) else None
    return [str(e) for e in env] if isinstance(env, list) else []


def format_platforms(platforms: Iterable[Platform]) -> str:
    return ", ".join(str(p) for p in platforms) or "none"


class RegistryClient:
    """Async registry API v2 reader; use as `async with RegistryClient(...) as client`.

    Answers are cached for the client's lifetime: use one client per preflight run.
    """

    def __init__(
        self,
        *,
        insecure: Iterable[str] = (),
        credentials: Mapping[str, Credentials] | None = None,
        timeout: float = 10.0,
        concurrency: int = 8,
        transport: httpx.AsyncBaseTransport | None = None,
        token_realms: Iterable[str] = (),
    ) -> None:
        self._insecure = frozenset(insecure)
        self._credentials = dict(credentials or {})
        self._token_realms = frozenset(h.lower() for h in token_realms)
        self._http = httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=True)
        self._limit = asyncio.Semaphore(concurrency)
        self._auth: dict[tuple[str, str], str] = {}
        self._results: dict[str, asyncio.Task[ImageIndex]] = {}
        self._configs: dict[str, asyncio.Task[dict[str, Any]]] = {}

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def platforms(self, ref: str | ImageRef) -> ImageIndex:
        """Every runnable platform of `ref`, with digests; concurrent callers share one fetch."""
        image = parse_image_ref(ref) if isinstance(ref, str) else ref
        key = str(image)
        if key not in self._results:
            self._results[key] = asyncio.ensure_future(self._fetch_index(image))
        return await self._results[key]

    async def check(self, ref: str | ImageRef, platform: Platform | str) -> PlatformCheck:
        """Does the registry offer `ref` for `platform`? Raises ServiceError if it cannot say."""
        wanted = parse_platform(platform) if isinstance(platform, str) else platform
        index = await self.platforms(ref)
        return PlatformCheck(index.find(wanted) is not None, index.digest, index.platforms)

    async def platforms_many(
        self, refs: Iterable[str | ImageRef]
    ) -> dict[str, ImageIndex | SwarmError]:
        """`platforms` for many images at once; one image's failure does not stop the rest."""
        keys = [str(r) for r in refs]
        answers = await asyncio.gather(*(self.platforms(k) for k in keys), return_exceptions=True)
        return {key: _as_result(answer) for key, answer in zip(keys, answers, strict=True)}

    async def config(self, ref: str | ImageRef, platform: Platform | str) -> dict[str, Any]:
        """The image config (`config.Env`, os, architecture) of `ref` for `platform` (cached)."""
        image = parse_image_ref(ref) if isinstance(ref, str) else ref
        wanted = parse_platform(platform) if isinstance(platform, str) else platform
        key = f"{image} {wanted}"
        if key not in self._configs:
            self._configs[key] = asyncio.ensure_future(self._fetch_config(image, wanted))
        return await self._configs[key]

    async def tags(self, ref: str | ImageRef) -> list[str]:
        """The repository's tags (`/v2/<name>/tags/list`, the first 1000)."""
        image = parse_image_ref(ref) if isinstance(ref, str) else ref
        body = _json_body(image, await self._get(image, "tags/list?n=1000", "application/json"))
        tags = body.get("tags")
        return [str(t) for t in tags] if isinstance(tags, list) else []

    async def _fetch_config(self, image: ImageRef, platform: Platform) -> dict[str, Any]:
        index = await self.platforms(image)
        manifest = index.find(platform)
        if manifest is None:
            raise ServiceError(f"image {image} has no {platform} variant",
                               hint=f"it offers {format_platforms(index.platforms)}")
        body = _json_body(image, await self._get(image, f"manifests/{manifest.digest}", MANIFEST_ACCEPT))
        config = body.get("config")
        if not isinstance(config, dict) or not _BLOB_DIGEST_RE.match(str(config.get("digest"))):
            raise _bad_answer(image, "a manifest without a valid config descriptor")
        response = await self._get(image, f"blobs/{config['digest']}", str(config.get("mediaType") or "*/*"))
        return _json_body(image, response)

    # --- fetching ------------------------------------------------------------------

    async def _fetch_index(self, image: ImageRef) -> ImageIndex:
        response = await self._get(image, f"manifests/{image.reference}", MANIFEST_ACCEPT)
        _check_pinned_content(image, response)
        body = _json_body(image, response)
        media_type = _media_type(body, response)
        digest = _content_digest(response)
        if "manifests" in body:
            return ImageIndex(image, digest, media_type, _index_platforms(image, body))
        platform = await self._single_platform(image, body)
        return ImageIndex(
            image, digest, media_type, (PlatformManifest(platform, digest, media_type),)
        )

    async def _single_platform(self, image: ImageRef, manifest: dict[str, Any]) -> Platform:
        if manifest.get("schemaVersion") == 1 and "architecture" in manifest:
            return Platform.of("linux", str(manifest["architecture"]))
        config = manifest.get("config")
        if not isinstance(config, dict) or not _BLOB_DIGEST_RE.match(str(config.get("digest"))):
            raise _bad_answer(image, "a manifest without a valid config descriptor")
        response = await self._get(
            image, f"blobs/{config['digest']}", str(config.get("mediaType") or "*/*")
        )
        blob = _json_body(image, response)
        return _platform_of(image, blob)

    async def _get(self, image: ImageRef, path: str, accept: str, method: str = "GET") -> httpx.Response:
        url = f"{self._base_url(image)}/{path}"
        async with self._limit:
            response = await self._send(image, url, accept, method)
            if response.status_code == 401:
                await self._authenticate(image, response)
                response = await self._send(image, url, accept, method)
        _raise_for_status(image, response)
        return response

    async def _send(self, image: ImageRef, url: str, accept: str, method: str = "GET") -> httpx.Response:
        headers = {"Accept": accept}
        auth = self._auth.get(_auth_key(image))
        if auth:
            headers["Authorization"] = auth
        try:
            return await self._http.request(method, url, headers=headers)
        except httpx.TransportError as exc:
            raise self._unreachable(image, exc) from exc

    # --- the digest a tag names now, and keeping a digest in the fleet's registry -----------

    async def digest(self, ref: str | ImageRef) -> str:
        """The digest `ref` names now: one HEAD (registries answer `Docker-Content-Digest`; Docker
        Hub does not count HEADs against its pull limit). The no-op check's cheap question."""
        image = parse_image_ref(ref) if isinstance(ref, str) else ref
        response = await self._get(image, f"manifests/{image.reference}", MANIFEST_ACCEPT, "HEAD")
        header = str(response.headers.get("Docker-Content-Digest", ""))
        if not _DIGEST_RE.match(header):
            return (await self.platforms(image)).digest   # a registry that leaves the header out
        return header

    async def copy(self, source: ImageRef, mirror: str, *, tag: str | None = None) -> int:
        """Put `source` (pinned by digest) into the registry `mirror` under the same repository path,
        with every platform's manifest, config and layers (and `tag`, if given); bytes copied.

        Nothing is read twice: a manifest the mirror has by digest is done, a blob it has is skipped.
        So a rollback to any release can pull its digests from the fleet's own registry."""
        if not source.digest:
            raise ServiceError(f"image {source}: copy needs a digest, not a tag")
        target = ImageRef(mirror, source.repository)
        if await self._has(target, "manifests", source.digest) and tag is None:
            return 0
        copied = await self._copy_manifest(source, target, source.digest)
        if tag is not None:
            body, media = await self._raw_manifest(source, source.digest)
            await self._put_manifest(target, tag, body, media)
        return copied

    async def _copy_manifest(self, source: ImageRef, target: ImageRef, digest: str) -> int:
        body, media = await self._raw_manifest(source, digest)
        document = json.loads(body)
        copied = 0
        for child in document.get("manifests") or []:   # an index: every platform (attestations too)
            copied += await self._copy_manifest(source, target, str(child["digest"]))
        for blob in [document.get("config"), *(document.get("layers") or [])]:
            if isinstance(blob, dict) and blob.get("digest"):
                copied += await self._copy_blob(source, target, str(blob["digest"]))
        await self._put_manifest(target, digest, body, media)
        return copied

    async def _raw_manifest(self, image: ImageRef, digest: str) -> tuple[bytes, str]:
        response = await self._get(image, f"manifests/{digest}", MANIFEST_ACCEPT)
        return response.content, _media_type(_json_body(image, response), response)

    async def _has(self, image: ImageRef, kind: str, digest: str) -> bool:
        try:
            await self._get(image, f"{kind}/{digest}", MANIFEST_ACCEPT, "HEAD")
        except ServiceError:
            return False
        return True

    async def _copy_blob(self, source: ImageRef, target: ImageRef, digest: str) -> int:
        if await self._has(target, "blobs", digest):
            return 0
        body = (await self._get(source, f"blobs/{digest}", "*/*")).content
        if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
            raise ServiceError(f"image {source}: blob {digest} arrived with other content",
                               hint="the registry or a proxy altered it; do not keep it")
        started = await self._write(target, "POST", f"{self._base_url(target)}/blobs/uploads/", b"", {})
        location = urljoin(f"{self._base_url(target)}/", started.headers.get("Location", ""))
        separator = "&" if "?" in location else "?"
        await self._write(target, "PUT", f"{location}{separator}digest={digest}", body,
                          {"Content-Type": "application/octet-stream"})
        return len(body)

    async def _put_manifest(self, target: ImageRef, reference: str, body: bytes, media: str) -> None:
        await self._write(target, "PUT", f"{self._base_url(target)}/manifests/{reference}", body,
                          {"Content-Type": media})

    async def _write(self, image: ImageRef, method: str, url: str, body: bytes,
                     headers: dict[str, str]) -> httpx.Response:
        auth = self._auth.get(_auth_key(image))
        sent = {**headers, **({"Authorization": auth} if auth else {})}
        try:
            response = await self._http.request(method, url, content=body, headers=sent)
        except httpx.TransportError as exc:
            raise self._unreachable(image, exc) from exc
        if response.status_code not in (201, 202):
            raise ServiceError(f"registry {image.registry} refused {method} {url.split('?')[0]} "
                               f"(HTTP {response.status_code}): {response.text[:200]}",
                               hint="is registry.mirror writable by swarm (not a pull-through cache)?")
        return response

    def _base_url(self, image: ImageRef) -> str:
        scheme = "http" if image.registry in self._insecure else "https"
        return f"{scheme}://{image.api_host}/v2/{image.repository}"

    # --- authentication ------------------------------------------------------------

    async def _authenticate(self, image: ImageRef, response: httpx.Response) -> None:
        scheme, params = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        creds = self._credentials.get(image.registry)
        if scheme == "bearer" and params.get("realm"):
            token = await self._fetch_token(image, params, creds)
            self._auth[_auth_key(image)] = f"Bearer {token}"
        elif scheme == "basic" and creds:
            self._auth[_auth_key(image)] = _basic_header(creds)
        else:
            raise _denied(image, "the registry wants credentials swarm does not have")

    async def _fetch_token(
        self, image: ImageRef, params: dict[str, str], creds: Credentials | None
    ) -> str:
        query = {"scope": params.get("scope") or f"repository:{image.repository}:pull"}
        if params.get("service"):
            query["service"] = params["service"]
        realm = params["realm"]
        auth = (creds.username, creds.password.reveal()) if creds and self._may_send(image, realm) else None
        try:
            answer = await self._http.get(realm, params=query, auth=auth)
        except httpx.TransportError as exc:
            raise self._unreachable(image, exc) from exc
        if answer.status_code in (401, 403):
            raise _denied(image, f"the token service refused (HTTP {answer.status_code})")
        if answer.status_code != 200:
            raise _bad_answer(image, f"HTTP {answer.status_code} from the token service")
        return _token_of(image, answer)

    def _may_send(self, image: ImageRef, realm: str) -> bool:
        """Credentials go to the registry's own host, or to a token realm the inventory allows
        (`registry.token_realms`) over https: a registry's answer may name any URL as its realm,
        and a realm that is not trusted gets the request without them (anonymous)."""
        try:
            url = httpx.URL(realm)
        except httpx.InvalidURL:
            return False
        own = image.api_host.rsplit(":", 1)[0].strip("[]").lower()
        host = (url.host or "").lower()
        if host == own:
            return url.scheme == "https" or image.registry in self._insecure
        return url.scheme == "https" and host in self._token_realms

    def _unreachable(self, image: ImageRef, exc: httpx.TransportError) -> ServiceError:
        detail = str(exc) or type(exc).__name__
        if image.registry in self._insecure:
            hint = "start the mirror (e.g. `swarm lab up`) or fix registry.mirror in the inventory"
            return ServiceError(
                f"registry {image.registry} unreachable: is the mirror running? ({detail})",
                hint=hint,
            )
        hint = "check DNS and the network route to the registry, or configure registry.mirror"
        if "SSL" in detail or "TLS" in detail:
            hint = "a plain-HTTP mirror needs `registry.insecure: true` in the inventory"
        return ServiceError(f"registry {image.registry} unreachable ({detail})", hint=hint)


# --- pure helpers -----------------------------------------------------------------------


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="...",service="...",scope="..."` -> ("bearer", {realm, service, scope})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): m.group(2) or m.group(3) or ""
        for m in _CHALLENGE_PARAM_RE.finditer(rest)
    }
    return scheme.lower(), params


def _auth_key(image: ImageRef) -> tuple[str, str]:
    return image.registry, image.repository


def _basic_header(creds: Credentials) -> str:
    pair = f"{creds.username}:{creds.password.reveal()}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def _as_result(answer: ImageIndex | BaseException) -> ImageIndex | SwarmError:
    if isinstance(answer, ImageIndex | SwarmError):
        return answer
    raise answer


def _content_digest(response: httpx.Response) -> str:
    header = str(response.headers.get("Docker-Content-Digest", ""))
    if _DIGEST_RE.match(header):
        return header
    return "sha256:" + hashlib.sha256(response.content).hexdigest()


def _check_pinned_content(image: ImageRef, response: httpx.Response) -> None:
    """A ref pinned by digest must get exactly those bytes (what was checked is what runs)."""
    if image.digest and image.digest.startswith("sha256:"):
        actual = "sha256:" + hashlib.sha256(response.content).hexdigest()
        if actual != image.digest:
            raise ServiceError(
                f"image {image}: registry {image.registry} served content with digest {actual}",
                hint="the registry or a proxy altered the manifest; do not deploy from it",
            )


def _media_type(body: dict[str, Any], response: httpx.Response) -> str:
    declared = body.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    return str(response.headers.get("Content-Type", "")).split(";")[0].strip()


def _json_body(image: ImageRef, response: httpx.Response) -> dict[str, Any]:
    try:
        body = json.loads(response.content)
    except ValueError as exc:
        raise _bad_answer(image, "a body that is not JSON") from exc
    if not isinstance(body, dict):
        raise _bad_answer(image, "JSON that is not an object")
    return body


def _index_platforms(image: ImageRef, index: dict[str, Any]) -> tuple[PlatformManifest, ...]:
    entries = index.get("manifests")
    if not isinstance(entries, list):
        raise _bad_answer(image, "an index whose `manifests` is not a list")
    found = (_index_entry(e) for e in entries if isinstance(e, dict))
    return tuple(m for m in found if m is not None)


def _index_entry(entry: dict[str, Any]) -> PlatformManifest | None:
    platform = entry.get("platform")
    annotations = entry.get("annotations")
    if (
        isinstance(annotations, dict)
        and annotations.get("vnd.docker.reference.type") == _ATTESTATION
    ):
        return None
    if not isinstance(platform, dict):
        return None
    os_name, arch = platform.get("os"), platform.get("architecture")
    if not isinstance(os_name, str) or not isinstance(arch, str) or "unknown" in (os_name, arch):
        return None
    variant = platform.get("variant")
    return PlatformManifest(
        Platform.of(os_name, arch, variant if isinstance(variant, str) else None),
        str(entry.get("digest", "")),
        str(entry.get("mediaType", "")),
    )


def _platform_of(image: ImageRef, config: dict[str, Any]) -> Platform:
    os_name, arch = config.get("os"), config.get("architecture")
    if not isinstance(os_name, str) or not isinstance(arch, str):
        raise _bad_answer(image, "an image config without os/architecture")
    variant = config.get("variant")
    return Platform.of(os_name, arch, variant if isinstance(variant, str) else None)


def _token_of(image: ImageRef, answer: httpx.Response) -> str:
    body = _json_body(image, answer)
    token = body.get("token") or body.get("access_token")
    if not isinstance(token, str) or not token:
        raise _bad_answer(image, "a token response without a token")
    return token


def _error_codes(response: httpx.Response) -> set[str]:
    try:
        errors = json.loads(response.content).get("errors") or []
        return {str(e.get("code")) for e in errors if isinstance(e, dict)}
    except (ValueError, AttributeError):
        return set()


def _raise_for_status(image: ImageRef, response: httpx.Response) -> None:
    status = response.status_code
    if status == 200:
        return
    if status == 404:
        raise _not_found(image, _error_codes(response))
    if status in (401, 403):
        raise _denied(image, f"HTTP {status} even after authenticating")
    if status == 429:
        raise ServiceError(
            f"registry {image.registry} is rate-limiting swarm (HTTP 429) while reading {image}",
            hint="wait a few minutes, log in for a higher limit, or pull through registry.mirror",
        )
    raise _bad_answer(image, f"HTTP {status} for {response.request.url}")


def _not_found(image: ImageRef, codes: set[str]) -> ServiceError:
    if "NAME_UNKNOWN" in codes:
        return ServiceError(
            f"image {image}: repository {image.repository} does not exist on {image.registry}",
            hint="check the image name in the role; with a mirror, push the image to it",
        )
    return ServiceError(
        f"image {image}: {image.reference} not found on {image.registry} (manifest unknown)",
        hint="check the tag exists upstream; with a mirror, push that tag to it",
    )


def _denied(image: ImageRef, why: str) -> ServiceError:
    return ServiceError(
        f"image {image}: access denied by {image.registry}: {why}",
        hint="check the image name (Docker Hub answers 'denied' for repositories that do not "
        "exist too), or configure credentials for a private image",
    )


def _bad_answer(image: ImageRef, what: str) -> ServiceError:
    return ServiceError(
        f"image {image}: registry {image.registry} answered with {what}",
        hint="retry; if it persists the registry or a proxy in front of it is misbehaving",
    )
