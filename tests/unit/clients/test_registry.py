"""Registry API v2 client against recorded registry answers (fixtures/registry/README.md).

The network boundary is replaced by `httpx.MockTransport` serving recorded bodies and
headers; everything on our side of it (auth flow, parsing, errors) is the real code.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.clients.images import parse_platform
from orchestrator.clients.registry import (
    MANIFEST_ACCEPT,
    Credentials,
    ImageIndex,
    RegistryClient,
    format_platforms,
    parse_challenge,
)
from orchestrator.errors import ServiceError
from orchestrator.secrets import Secret

FIXTURES = Path(__file__).parents[1] / "fixtures" / "registry"
T = TypeVar("T")

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
HUB_CHALLENGE = (
    'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
    'scope="repository:library/nginx:pull"'
)
GHCR_CHALLENGE = (
    'Bearer realm="https://ghcr.io/token",service="ghcr.io",'
    'scope="repository:open-webui/open-webui:pull"'
)
FEDORA_AMD64 = "sha256:fdf235fa167d2aa5d820fba274ec1d2edeb0534bd32d28d602a19b31bad79b80"
FEDORA_CONFIG = "sha256:a78267678b7e6e849c7e960b09227b737a38d5073a5071b041a16bd4b609ef92"
NGINX_CONFIG = "sha256:203ad09fc1566a329c1d2af8d1f219b28fd2c00b69e743bd572b7f662365432d"
MIRROR = "198.18.0.1:5000"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def sha256(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


Handler = Callable[[httpx.Request], httpx.Response]


class FakeRegistry:
    """Routes `host + path` to recorded answers and remembers every request."""

    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.requests: list[httpx.Request] = []

    def serve(self, url: str, handler: Handler) -> None:
        self.routes[url] = handler

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        key = f"{request.url.scheme}://{request.url.host}"
        if request.url.port:
            key += f":{request.url.port}"
        key += request.url.path
        handler = self.routes.get(key)
        if handler is None:
            return httpx.Response(404, json={"errors": [{"code": "NOT_IN_FAKE", "message": key}]})
        return handler(request)

    def client(self, **kwargs: Any) -> RegistryClient:
        return RegistryClient(transport=httpx.MockTransport(self), **kwargs)

    def hits(self, fragment: str) -> list[httpx.Request]:
        return [r for r in self.requests if fragment in str(r.url)]


def answer(
    body: bytes, content_type: str, status: int = 200, **headers: str
) -> Callable[[httpx.Request], httpx.Response]:
    def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(
            status, content=body, headers={"Content-Type": content_type, **headers}
        )

    return handler


def bearer_protected(
    token: str, challenge: str, ok: Handler
) -> Callable[[httpx.Request], httpx.Response]:
    """A registry endpoint that answers 401 + challenge until shown `Bearer <token>`."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers.get("Authorization") == f"Bearer {token}":
            return ok(request)
        return httpx.Response(
            401,
            content=fixture("dockerhub-401-unauthorized.json"),
            headers={"Content-Type": "application/json", "Www-Authenticate": challenge},
        )

    return handler


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def read(fake: FakeRegistry, ref: str, **kwargs: Any) -> ImageIndex:
    async with fake.client(**kwargs) as client:
        return await client.platforms(ref)


# --- Docker Hub: anonymous bearer flow + OCI index with attestations ------------------


def docker_hub_nginx() -> tuple[FakeRegistry, bytes]:
    fake = FakeRegistry()
    index = fixture("dockerhub-nginx-1.29.1-index.json")
    fake.serve(
        "https://registry-1.docker.io/v2/library/nginx/manifests/1.29.1",
        bearer_protected(
            "abc123",
            HUB_CHALLENGE,
            answer(index, OCI_INDEX, **{"Docker-Content-Digest": sha256(index)}),
        ),
    )
    fake.serve(
        "https://auth.docker.io/token", answer(fixture("dockerhub-token.json"), "application/json")
    )
    return fake, index


def test_docker_hub_index_lists_platforms_and_skips_attestations() -> None:
    fake, index = docker_hub_nginx()
    result = run(read(fake, "nginx:1.29.1"))
    assert [str(p) for p in result.platforms] == [
        "linux/amd64",
        "linux/arm/v5",
        "linux/arm/v7",
        "linux/arm64",
        "linux/386",
        "linux/mips64le",
        "linux/ppc64le",
        "linux/s390x",
    ]
    assert result.media_type == OCI_INDEX
    assert result.digest == sha256(index)
    assert result.pinned == f"docker.io/library/nginx@{sha256(index)}"
    arm64 = result.find(parse_platform("linux/arm64/v8"))
    assert arm64 is not None
    assert arm64.digest == "sha256:e041cf856a0f3790b5ef37a966f43d872fba48fcf4405fd3e8a28ac5f7436992"


def test_docker_hub_bearer_flow_asks_the_realm_for_the_challenged_scope() -> None:
    fake, _ = docker_hub_nginx()
    run(read(fake, "docker.io/library/nginx:1.29.1"))
    first, token, retry = fake.requests
    assert first.headers["Accept"] == MANIFEST_ACCEPT
    assert "Authorization" not in first.headers
    assert token.url.host == "auth.docker.io"
    assert token.url.params["scope"] == "repository:library/nginx:pull"
    assert token.url.params["service"] == "registry.docker.io"
    assert "Authorization" not in token.headers  # anonymous
    assert retry.headers["Authorization"] == "Bearer abc123"


def test_check_answers_ok_digest_and_offered_platforms() -> None:
    fake, index = docker_hub_nginx()

    async def scenario() -> tuple[Any, Any]:
        async with fake.client() as client:
            return (
                await client.check("nginx:1.29.1", "linux/arm64"),
                await client.check("nginx:1.29.1", parse_platform("linux/riscv64")),
            )

    arm64, riscv = run(scenario())
    ok, digest, offered = arm64
    assert ok and digest == sha256(index) and len(offered) == 8
    assert not riscv.ok
    assert "linux/arm64" in format_platforms(riscv.offered)
    assert len(fake.hits("/manifests/")) == 2  # 401 + retry, once: the second check is cached


# --- GHCR: bearer flow with a `token`-only answer ---------------------------------------


def test_ghcr_bearer_flow_and_manifest_list() -> None:
    fake = FakeRegistry()
    ghcr_token = json.loads(fixture("ghcr-token.json"))["token"]
    listing = fixture("dockerhub-fedora-manifest-list.json")
    fake.serve(
        "https://ghcr.io/v2/open-webui/open-webui/manifests/v0.3.35",
        bearer_protected(ghcr_token, GHCR_CHALLENGE, answer(listing, DOCKER_LIST)),
    )
    fake.serve("https://ghcr.io/token", answer(fixture("ghcr-token.json"), "application/json"))
    result = run(read(fake, "ghcr.io/open-webui/open-webui:v0.3.35"))
    assert "linux/arm64" in format_platforms(result.platforms)
    assert fake.requests[-1].headers["Authorization"] == f"Bearer {ghcr_token}"
    assert fake.requests[1].url.params["service"] == "ghcr.io"


# --- a plain-HTTP mirror: manifest list, single manifest + config blob ----------------


def test_insecure_mirror_manifest_list_over_plain_http() -> None:
    fake = FakeRegistry()
    listing = fixture("dockerhub-fedora-manifest-list.json")
    fake.serve(f"http://{MIRROR}/v2/library/fedora/manifests/33", answer(listing, DOCKER_LIST))
    result = run(read(fake, f"{MIRROR}/library/fedora:33", insecure=[MIRROR]))
    assert [str(p) for p in result.platforms] == [
        "linux/amd64",
        "linux/arm/v7",
        "linux/arm64",
        "linux/ppc64le",
        "linux/s390x",
    ]
    assert result.digest == sha256(listing)  # no Docker-Content-Digest header: hash the body
    assert result.media_type == DOCKER_LIST
    assert fake.requests[0].url.scheme == "http"


def test_single_docker_v2_manifest_reads_platform_from_config_blob() -> None:
    fake = FakeRegistry()
    manifest = fixture("dockerhub-fedora-amd64-manifest.json")
    fake.serve(
        f"http://{MIRROR}/v2/library/fedora/manifests/amd64-only",
        answer(manifest, DOCKER_V2, **{"Docker-Content-Digest": FEDORA_AMD64}),
    )
    fake.serve(
        f"http://{MIRROR}/v2/library/fedora/blobs/{FEDORA_CONFIG}",
        answer(fixture("dockerhub-fedora-amd64-config.json"), "application/octet-stream"),
    )

    async def scenario() -> Any:
        async with fake.client(insecure=[MIRROR]) as client:
            return await client.check(f"{MIRROR}/library/fedora:amd64-only", "linux/arm64")

    ok, digest, offered = run(scenario())
    assert not ok  # an amd64-only image for oracle
    assert digest == FEDORA_AMD64
    assert [str(p) for p in offered] == ["linux/amd64"]
    blob = fake.hits("/blobs/")[0]
    assert blob.headers["Accept"] == "application/vnd.docker.container.image.v1+json"


def test_single_oci_manifest_with_oci_config() -> None:
    fake = FakeRegistry()
    fake.serve(
        f"http://{MIRROR}/v2/library/nginx/manifests/1.29.1",
        answer(fixture("dockerhub-nginx-1.29.1-amd64-manifest.json"), OCI_MANIFEST),
    )
    fake.serve(
        f"http://{MIRROR}/v2/library/nginx/blobs/{NGINX_CONFIG}",
        answer(fixture("dockerhub-nginx-1.29.1-amd64-config.json"), "application/octet-stream"),
    )
    result = run(read(fake, f"{MIRROR}/library/nginx:1.29.1", insecure=[MIRROR]))
    assert [str(p) for p in result.platforms] == ["linux/amd64"]
    assert result.manifests[0].digest == result.digest


def test_basic_auth_mirror_uses_credentials_and_never_leaks_them() -> None:
    fake = FakeRegistry()
    listing = fixture("dockerhub-fedora-manifest-list.json")

    def basic(request: httpx.Request) -> httpx.Response:
        if request.headers.get("Authorization", "").startswith("Basic "):
            return answer(listing, DOCKER_LIST)(request)
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="Registry Realm"'})

    fake.serve(f"http://{MIRROR}/v2/library/fedora/manifests/33", basic)
    creds = {MIRROR: Credentials("swarm", Secret("hunter2-very-secret", "mirror"))}
    result = run(read(fake, f"{MIRROR}/library/fedora:33", insecure=[MIRROR], credentials=creds))
    assert len(result.platforms) == 5
    # base64("swarm:hunter2-very-secret")
    assert (
        fake.requests[-1].headers["Authorization"] == "Basic c3dhcm06aHVudGVyMi12ZXJ5LXNlY3JldA=="
    )

    with pytest.raises(ServiceError, match="access denied") as denied:
        run(read(fake, f"{MIRROR}/library/fedora:33", insecure=[MIRROR]))
    assert "hunter2" not in str(denied.value)


# --- errors ----------------------------------------------------------------------------


def test_unknown_tag_is_a_clear_service_error() -> None:
    fake = FakeRegistry()
    fake.serve(
        f"http://{MIRROR}/v2/library/redis/manifests/no-such-tag",
        answer(fixture("distribution-404-manifest-unknown.json"), "application/json", 404),
    )
    with pytest.raises(ServiceError, match="no-such-tag not found on 198.18.0.1:5000") as err:
        run(read(fake, f"{MIRROR}/library/redis:no-such-tag", insecure=[MIRROR]))
    assert err.value.hint and "push that tag" in err.value.hint


def test_unknown_repository_is_a_clear_service_error() -> None:
    fake = FakeRegistry()
    fake.serve(
        f"http://{MIRROR}/v2/no/such-repo/manifests/1",
        answer(fixture("distribution-404-name-unknown.json"), "application/json", 404),
    )
    with pytest.raises(ServiceError, match="repository no/such-repo does not exist"):
        run(read(fake, f"{MIRROR}/no/such-repo:1", insecure=[MIRROR]))


def test_unreachable_mirror_says_so() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    client = RegistryClient(transport=httpx.MockTransport(refuse), insecure=[MIRROR])

    async def scenario() -> ImageIndex:
        async with client:
            return await client.platforms(f"{MIRROR}/library/redis:7-alpine")

    with pytest.raises(ServiceError, match="registry 198.18.0.1:5000 unreachable: is the mirror"):
        run(scenario())


def test_tls_to_a_plain_http_registry_hints_at_insecure() -> None:
    def tls_fail(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(
            "[SSL: WRONG_VERSION_NUMBER] wrong version number", request=request
        )

    client = RegistryClient(transport=httpx.MockTransport(tls_fail))

    async def scenario() -> ImageIndex:
        async with client:
            return await client.platforms(f"{MIRROR}/library/redis:7-alpine")

    with pytest.raises(ServiceError) as err:
        run(scenario())
    assert err.value.hint and "registry.insecure" in err.value.hint


def test_token_service_refusal_is_access_denied() -> None:
    fake, _ = docker_hub_nginx()
    fake.serve("https://auth.docker.io/token", answer(b'{"details":"no"}', "application/json", 401))
    with pytest.raises(ServiceError, match="access denied by docker.io"):
        run(read(fake, "nginx:1.29.1"))


def test_still_unauthorized_after_token_is_access_denied() -> None:
    fake, _ = docker_hub_nginx()
    fake.serve("https://auth.docker.io/token", answer(b'{"token":"wrong"}', "application/json"))
    with pytest.raises(ServiceError, match="access denied") as err:
        run(read(fake, "nginx:1.29.1"))
    assert err.value.hint and "do not exist" in err.value.hint


def test_rate_limit_is_named() -> None:
    fake = FakeRegistry()
    fake.serve(
        "https://registry-1.docker.io/v2/library/redis/manifests/7-alpine",
        answer(b'{"errors":[{"code":"TOOMANYREQUESTS"}]}', "application/json", 429),
    )
    with pytest.raises(ServiceError, match="rate-limiting"):
        run(read(fake, "redis:7-alpine"))


def test_garbage_body_is_a_service_error() -> None:
    fake = FakeRegistry()
    fake.serve(
        "https://registry-1.docker.io/v2/library/redis/manifests/7", answer(b"<html>", "text/html")
    )
    with pytest.raises(ServiceError, match="not JSON"):
        run(read(fake, "redis:7"))


# --- many images at once -----------------------------------------------------------------


def test_platforms_many_shares_fetches_and_keeps_going_past_failures() -> None:
    fake, _ = docker_hub_nginx()
    listing = fixture("dockerhub-fedora-manifest-list.json")
    fake.serve(f"http://{MIRROR}/v2/library/fedora/manifests/33", answer(listing, DOCKER_LIST))
    fake.serve(
        f"http://{MIRROR}/v2/library/redis/manifests/gone",
        answer(fixture("distribution-404-manifest-unknown.json"), "application/json", 404),
    )

    async def scenario() -> dict[str, Any]:
        async with fake.client(insecure=[MIRROR], concurrency=2) as client:
            return await client.platforms_many(
                [
                    "nginx:1.29.1",
                    "nginx:1.29.1",
                    f"{MIRROR}/library/fedora:33",
                    f"{MIRROR}/library/redis:gone",
                ]
            )

    results = run(scenario())
    assert isinstance(results["nginx:1.29.1"], ImageIndex)
    assert isinstance(results[f"{MIRROR}/library/fedora:33"], ImageIndex)
    assert isinstance(results[f"{MIRROR}/library/redis:gone"], ServiceError)
    assert len(fake.hits("nginx/manifests")) == 2  # 401 + retry, shared by both callers


@pytest.mark.parametrize(
    ("header", "scheme", "params"),
    [
        (
            HUB_CHALLENGE,
            "bearer",
            {
                "realm": "https://auth.docker.io/token",
                "service": "registry.docker.io",
                "scope": "repository:library/nginx:pull",
            },
        ),
        (
            'Bearer service="ghcr.io",realm="https://ghcr.io/token",scope="repository:a/b:pull,push"',
            "bearer",
            {
                "realm": "https://ghcr.io/token",
                "service": "ghcr.io",
                "scope": "repository:a/b:pull,push",
            },
        ),
        ('Basic realm="Registry Realm"', "basic", {"realm": "Registry Realm"}),
        ("", "", {}),
    ],
)
def test_parse_challenge(header: str, scheme: str, params: dict[str, str]) -> None:
    assert parse_challenge(header) == (scheme, params)


def test_a_ref_pinned_by_digest_must_get_those_bytes() -> None:
    fake = FakeRegistry()
    listing = fixture("dockerhub-fedora-manifest-list.json")
    pinned = sha256(listing)
    fake.serve(
        f"http://{MIRROR}/v2/library/fedora/manifests/{pinned}", answer(listing, DOCKER_LIST)
    )
    result = run(read(fake, f"{MIRROR}/library/fedora@{pinned}", insecure=[MIRROR]))
    assert result.digest == pinned

    other = "sha256:" + "0" * 64
    fake.serve(f"http://{MIRROR}/v2/library/fedora/manifests/{other}", answer(listing, DOCKER_LIST))
    with pytest.raises(ServiceError, match="served content with digest"):
        run(read(fake, f"{MIRROR}/library/fedora@{other}", insecure=[MIRROR]))


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
_manifest_keys = st.sampled_from(
    ["manifests", "platform", "annotations", "config", "digest", "os", "architecture", "mediaType"]
)
_manifestish = st.recursive(
    st.none() | st.text(max_size=8) | st.integers(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_manifest_keys, inner, max_size=4),
    max_leaves=15,
)


@settings(max_examples=150, deadline=None)
@given(body=_json | _manifestish)
def test_any_json_body_gives_an_index_or_a_service_error(body: object) -> None:
    fake = FakeRegistry()
    fake.serve(
        f"http://{MIRROR}/v2/library/x/manifests/1",
        answer(json.dumps(body).encode(), "application/json"),
    )
    try:
        result = run(read(fake, f"{MIRROR}/library/x:1", insecure=[MIRROR]))
    except ServiceError:
        return
    assert isinstance(result, ImageIndex)


@given(st.text(max_size=80))
def test_parse_challenge_never_crashes(header: str) -> None:
    scheme, params = parse_challenge(header)
    assert isinstance(scheme, str) and isinstance(params, dict)


def _private_mirror(realm: str) -> FakeRegistry:
    """A mirror whose 401 names `realm` as its token service, which hands out a token to anyone."""
    fake = FakeRegistry()
    challenge = f'Bearer realm="{realm}",service="mirror",scope="repository:team/app:pull"'
    fake.serve(f"https://{MIRROR}/v2/team/app/manifests/1.0",
               bearer_protected("tok", challenge, answer(fixture("dockerhub-nginx-1.29.1-index.json"), OCI_INDEX)))
    fake.serve(realm, lambda r: httpx.Response(200, json={"token": "tok"}))
    return fake


CREDS = {MIRROR: Credentials("ci", Secret("registry-password-9f2", "registry"))}


@pytest.mark.parametrize(("realm", "allowed", "sent"), [
    ("https://evil.example/token", (), False),                      # a realm the registry names
    ("http://198.18.0.1/token", (), False),                         # its own host, but not over TLS
    (f"https://{MIRROR.split(':')[0]}/token", (), True),            # its own host over https
    ("https://auth.tail.net/token", ("auth.tail.net",), True),      # a realm the inventory allows
])
def test_credentials_go_only_to_the_registry_or_an_allowed_realm(realm: str, allowed: tuple[str, ...],
                                                                  sent: bool) -> None:
    fake = _private_mirror(realm)

    async def scenario() -> None:
        async with fake.client(credentials=CREDS, token_realms=allowed) as client:
            await client.platforms(f"{MIRROR}/team/app:1.0")

    run(scenario())
    token_request = next(r for r in fake.requests if str(r.url).startswith(realm))
    assert ("Authorization" in token_request.headers) is sent
