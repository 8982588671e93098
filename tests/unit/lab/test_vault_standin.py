"""Conformance of the Vault stand-in, driven through hvac and through raw HTTP.

Each test names the Vault documentation page behind the expectation
(https://developer.hashicorp.com/vault/api-docs/...). Everything runs on 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import select
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import hvac
import hvac.exceptions
import pytest

from orchestrator.lab.standins import vault as standin

ROOT = "root-token-for-tests"


@pytest.fixture
def server() -> Iterator[standin.StandinServer]:
    srv = standin.serve("127.0.0.1", 0, root_token=ROOT, mode="healthy")
    yield srv
    srv.shutdown()


@pytest.fixture
def fresh() -> Iterator[standin.StandinServer]:
    """A `vault server -config ...` that was never initialised."""
    srv = standin.serve("127.0.0.1", 0, dev=False, mode="healthy")
    yield srv
    srv.shutdown()


@pytest.fixture
def client(server: standin.StandinServer) -> hvac.Client:
    return hvac.Client(url=server.url, token=ROOT)


@pytest.fixture
def raw(server: standin.StandinServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"X-Vault-Token": ROOT}, timeout=5) as c:
        yield c


def kv2(client: hvac.Client) -> object:
    return client.secrets.kv.v2


def wait_until(pred: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.05)


def assert_vault_error(resp: httpx.Response, status: int, errors: list[str]) -> None:
    """api-docs#error-response: errors are `{"errors": [...]}`, Content-Type application/json."""
    assert resp.status_code == status
    assert resp.headers["content-type"] == "application/json"
    assert resp.json() == {"errors": errors}


# --------------------------------------------------------------------------- sys


def test_health_of_an_active_dev_server(raw: httpx.Client) -> None:
    """system/health: 200 when initialised, unsealed and active; the body names the version."""
    resp = httpx.get(f"{raw.base_url}/v1/sys/health")
    assert resp.status_code == 200
    body = resp.json()
    assert body["initialized"] is True and body["sealed"] is False and body["standby"] is False
    assert body["version"].startswith("1.15") and "cluster_id" in body
    assert httpx.head(f"{raw.base_url}/v1/sys/health").status_code == 200


def test_health_codes_sealed_and_uninitialised(fresh: standin.StandinServer) -> None:
    """system/health: 501 not initialised, 503 sealed; `uninitcode` / `sealedcode` override."""
    url = f"{fresh.url}/v1/sys/health"
    assert httpx.get(url).status_code == 501
    assert httpx.get(url, params={"uninitcode": 200}).status_code == 200
    hvac.Client(url=fresh.url).sys.initialize(secret_shares=1, secret_threshold=1)
    assert httpx.get(url).status_code == 503
    assert httpx.get(url, params={"sealedcode": 299}).status_code == 299
    assert httpx.get(url).json()["sealed"] is True


def test_health_of_a_standby() -> None:
    """system/health: 429 for an unsealed standby; `standbyok=true` makes it the active code."""
    srv = standin.serve("127.0.0.1", 0, root_token=ROOT, standby=True)
    try:
        url = f"{srv.url}/v1/sys/health"
        resp = httpx.get(url)
        assert resp.status_code == 429 and resp.json()["standby"] is True
        assert httpx.get(url, params={"standbyok": "true"}).status_code == 200
        assert httpx.get(url, params={"standbycode": 200}).status_code == 200
    finally:
        srv.shutdown()


def test_started_sealed() -> None:
    """`--sealed`: a dev server that starts sealed; its one unseal key opens it."""
    srv = standin.serve("127.0.0.1", 0, root_token=ROOT, sealed=True)
    try:
        client = hvac.Client(url=srv.url, token=ROOT)
        assert client.sys.is_sealed() is True
        assert client.sys.submit_unseal_key(srv.unseal_keys[0])["sealed"] is False
    finally:
        srv.shutdown()


def test_init_returns_keys_and_root_token(fresh: standin.StandinServer) -> None:
    """system/init: GET says whether initialised; PUT returns keys, keys_base64, root_token;
    a second PUT is 400 "Vault is already initialized"."""
    client = hvac.Client(url=fresh.url)
    assert client.sys.is_initialized() is False
    result = client.sys.initialize(secret_shares=3, secret_threshold=2)
    assert len(result["keys"]) == 3 and len(result["keys_base64"]) == 3
    assert result["root_token"].startswith("hvs.")
    assert client.sys.is_initialized() is True
    resp = httpx.put(f"{fresh.url}/v1/sys/init", json={"secret_shares": 1, "secret_threshold": 1})
    assert_vault_error(resp, 400, ["Vault is already initialized"])


def test_unseal_progress_and_seal(fresh: standin.StandinServer) -> None:
    """system/unseal: each key share raises `progress` until `t` shares unseal;
    system/seal-status reports t, n, progress; system/seal (root) seals again (204)."""
    client = hvac.Client(url=fresh.url)
    result = client.sys.initialize(secret_shares=3, secret_threshold=2)
    status = client.sys.submit_unseal_key(result["keys"][0])
    assert (status["sealed"], status["t"], status["n"], status["progress"]) == (True, 2, 3, 1)
    status = client.sys.submit_unseal_key(result["keys_base64"][1])
    assert status["sealed"] is False and status["progress"] == 0
    assert client.sys.read_seal_status()["sealed"] is False
    client.token = result["root_token"]
    resp = httpx.put(f"{fresh.url}/v1/sys/seal", headers={"X-Vault-Token": client.token})
    assert resp.status_code == 204 and resp.content == b""
    assert client.sys.is_sealed() is True


def test_unseal_with_a_wrong_key_is_400(fresh: standin.StandinServer) -> None:
    client = hvac.Client(url=fresh.url)
    client.sys.initialize(secret_shares=1, secret_threshold=1)
    resp = httpx.put(f"{fresh.url}/v1/sys/unseal", json={"key": "00" * 33})
    assert resp.status_code == 400 and resp.json()["errors"]


def test_sealed_vault_answers_503_except_sys(server: standin.StandinServer) -> None:
    """api-docs#http-status-codes: 503 "Vault is down for maintenance or is currently sealed";
    seal-status and health still answer."""
    client = hvac.Client(url=server.url, token=ROOT)
    client.sys.seal()
    resp = httpx.get(f"{server.url}/v1/secret/data/x", headers={"X-Vault-Token": ROOT})
    assert_vault_error(resp, 503, ["Vault is sealed"])
    with pytest.raises(hvac.exceptions.VaultDown):
        client.auth.token.lookup_self()
    assert client.sys.read_seal_status()["sealed"] is True
    client.sys.submit_unseal_key(server.unseal_keys[0])
    assert client.auth.token.lookup_self()["data"]["policies"] == ["root"]


# --------------------------------------------------------------------------- token auth


def test_missing_or_wrong_token_is_403(server: standin.StandinServer) -> None:
    """api-docs#authentication: X-Vault-Token (or Authorization: Bearer); without a valid
    token the answer is 403 {"errors":["permission denied"]}."""
    url = f"{server.url}/v1/secret/data/x"
    assert_vault_error(httpx.get(url), 403, ["permission denied"])
    assert_vault_error(
        httpx.get(url, headers={"X-Vault-Token": "nope"}), 403, ["permission denied"]
    )
    bearer = httpx.get(url, headers={"Authorization": f"Bearer {ROOT}"})
    assert bearer.status_code == 404  # authenticated, secret missing
    with pytest.raises(hvac.exceptions.Forbidden):
        hvac.Client(url=server.url, token="nope").auth.token.lookup_self()


def test_lookup_self(client: hvac.Client) -> None:
    """auth/token#lookup-a-token-self: data.policies, data.id, data.ttl ..."""
    data = client.auth.token.lookup_self()["data"]
    assert data["id"] == ROOT and data["policies"] == ["root"] and data["ttl"] == 0
    assert client.is_authenticated() is True


def test_child_token_with_a_policy(client: hvac.Client, server: standin.StandinServer) -> None:
    """auth/token#create-token and concepts/policies: a token gets its policies plus
    "default"; a path its policies do not grant is 403."""
    client.sys.create_or_update_policy(
        "reader", 'path "secret/data/ai-swarm/*" {\n  capabilities = ["read"]\n}'
    )
    kv2(client).create_or_update_secret("ai-swarm/a", {"k": "v"}, mount_point="secret")
    token = client.auth.token.create(policies=["reader"], ttl="1h")["auth"]["client_token"]
    reader = hvac.Client(url=server.url, token=token)
    assert sorted(reader.auth.token.lookup_self()["data"]["policies"]) == ["default", "reader"]
    read = kv2(reader).read_secret_version(
        "ai-swarm/a", mount_point="secret", raise_on_deleted_version=True
    )
    assert read["data"]["data"] == {"k": "v"}
    with pytest.raises(hvac.exceptions.Forbidden):
        kv2(reader).create_or_update_secret("ai-swarm/a", {"k": "w"}, mount_point="secret")
    with pytest.raises(hvac.exceptions.Forbidden):
        kv2(reader).read_secret_version(
            "other", mount_point="secret", raise_on_deleted_version=True
        )


def test_kv2_create_and_update_capabilities(
    client: hvac.Client, server: standin.StandinServer
) -> None:
    """concepts/policies#capabilities: writing a new KV v2 secret needs `create`, writing an
    existing one needs `update` (the engine's existence check)."""
    client.sys.create_or_update_policy(
        "create-only", 'path "secret/data/*" { capabilities = ["create"] }'
    )
    token = client.auth.token.create(policies=["create-only"])["auth"]["client_token"]
    limited = hvac.Client(url=server.url, token=token)
    kv2(limited).create_or_update_secret("new", {"a": "1"}, mount_point="secret")
    with pytest.raises(hvac.exceptions.Forbidden):
        kv2(limited).create_or_update_secret("new", {"a": "2"}, mount_point="secret")


# --------------------------------------------------------------------------- AppRole


def test_approle_login_returns_client_token(
    client: hvac.Client, server: standin.StandinServer
) -> None:
    """auth/approle: create role (token_policies), read role-id, generate secret-id, login
    -> auth.client_token (hvac stores it as the client's token)."""
    client.sys.enable_auth_method("approle")
    client.sys.create_or_update_policy(
        "deploy", {"path": {"secret/data/*": {"capabilities": ["read", "create", "update"]}}}
    )
    client.auth.approle.create_or_update_approle("swarm", token_policies=["deploy"], token_ttl="1h")
    role_id = client.auth.approle.read_role_id("swarm")["data"]["role_id"]
    secret_id = client.auth.approle.generate_secret_id("swarm")["data"]["secret_id"]
    app = hvac.Client(url=server.url)
    auth = app.auth.approle.login(role_id=role_id, secret_id=secret_id)["auth"]
    assert auth["client_token"] == app.token and auth["token_policies"] == ["default", "deploy"]
    assert auth["lease_duration"] == 3600 and auth["metadata"] == {"role_name": "swarm"}
    kv2(app).create_or_update_secret("x", {"a": "b"}, mount_point="secret")
    with pytest.raises(hvac.exceptions.InvalidRequest):
        hvac.Client(url=server.url).auth.approle.login(role_id=role_id, secret_id="wrong")


def test_approle_is_not_enabled_by_default(server: standin.StandinServer) -> None:
    """A dev server mounts only the token auth method; login on approle/ is refused."""
    resp = httpx.post(
        f"{server.url}/v1/auth/approle/login", json={"role_id": "x", "secret_id": "y"}
    )
    assert resp.status_code in (400, 403, 404) and resp.json()["errors"]


# --------------------------------------------------------------------------- KV v2


def test_kv2_write_returns_version_metadata(raw: httpx.Client) -> None:
    """secret/kv/kv-v2#create-update-secret: the answer's data is the version metadata."""
    resp = raw.post("/v1/secret/data/ai-swarm/litellm", json={"data": {"KEY": "v1"}})
    assert resp.status_code == 200
    data = resp.json()["data"]
    assert data["version"] == 1 and data["deletion_time"] == "" and data["destroyed"] is False
    assert data["created_time"].endswith("Z") and "custom_metadata" in data
    assert (
        raw.put("/v1/secret/data/ai-swarm/litellm", json={"data": {"KEY": "v2"}}).json()["data"][
            "version"
        ]
        == 2
    )


def test_kv2_read_and_versions(client: hvac.Client) -> None:
    """secret/kv/kv-v2#read-secret-version: data.data and data.metadata; ?version=N."""
    for value in ("one", "two"):
        kv2(client).create_or_update_secret("app", {"k": value}, mount_point="secret")
    latest = kv2(client).read_secret_version(
        "app", mount_point="secret", raise_on_deleted_version=True
    )
    assert latest["data"]["data"] == {"k": "two"} and latest["data"]["metadata"]["version"] == 2
    first = kv2(client).read_secret_version(
        "app", version=1, mount_point="secret", raise_on_deleted_version=True
    )
    assert first["data"]["data"] == {"k": "one"}


def test_kv2_check_and_set(client: hvac.Client, raw: httpx.Client) -> None:
    """secret/kv/kv-v2#create-update-secret, options.cas: 0 = only if absent, N = only if
    the current version is N; a mismatch is 400 with Vault's message."""
    kv2(client).create_or_update_secret("svc", {"k": "a"}, cas=0, mount_point="secret")
    resp = raw.post("/v1/secret/data/svc", json={"data": {"k": "b"}, "options": {"cas": 0}})
    assert_vault_error(resp, 400, ["check-and-set parameter did not match the current version"])
    with pytest.raises(hvac.exceptions.InvalidRequest, match="check-and-set"):
        kv2(client).create_or_update_secret("svc", {"k": "b"}, cas=5, mount_point="secret")
    assert (
        kv2(client).create_or_update_secret("svc", {"k": "b"}, cas=1, mount_point="secret")["data"][
            "version"
        ]
        == 2
    )


def test_kv2_cas_required(client: hvac.Client, raw: httpx.Client) -> None:
    """secret/kv/kv-v2#configure-the-kv-engine, cas_required: writes without cas are 400."""
    kv2(client).configure(cas_required=True, mount_point="secret")
    resp = raw.post("/v1/secret/data/x", json={"data": {"a": "b"}})
    assert_vault_error(resp, 400, ["check-and-set parameter required for this call"])


def test_kv2_missing_secret_is_404_with_empty_errors(
    raw: httpx.Client, client: hvac.Client
) -> None:
    """secret/kv/kv-v2#read-secret-version: a path never written is 404 {"errors":[]}."""
    assert_vault_error(raw.get("/v1/secret/data/nope"), 404, [])
    assert_vault_error(raw.get("/v1/secret/metadata/nope"), 404, [])
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv2(client).read_secret_version("nope", mount_point="secret", raise_on_deleted_version=True)


def test_kv2_soft_delete_is_404_with_full_body(raw: httpx.Client, client: hvac.Client) -> None:
    """secret/kv/kv-v2#delete-latest-version-of-secret (204) and #read-secret-version: a
    deleted version reads as 404 whose body still has data.metadata.deletion_time (hvac's
    raise_on_deleted_version=False relies on it); undelete brings it back."""
    kv2(client).create_or_update_secret("gone", {"k": "v"}, mount_point="secret")
    assert raw.delete("/v1/secret/data/gone").status_code == 204
    resp = raw.get("/v1/secret/data/gone")
    assert resp.status_code == 404 and resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert body["data"]["data"] is None and body["data"]["metadata"]["deletion_time"] != ""
    assert "errors" not in body
    soft = kv2(client).read_secret_version(
        "gone", mount_point="secret", raise_on_deleted_version=False
    )
    assert soft["data"]["metadata"]["version"] == 1
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv2(client).read_secret_version("gone", mount_point="secret", raise_on_deleted_version=True)
    kv2(client).undelete_secret_versions("gone", versions=[1], mount_point="secret")
    assert kv2(client).read_secret("gone", mount_point="secret", raise_on_deleted_version=True)[
        "data"
    ]["data"] == {"k": "v"}
    kv2(client).destroy_secret_versions("gone", versions=[1], mount_point="secret")
    assert raw.get("/v1/secret/data/gone").json()["data"]["metadata"]["destroyed"] is True


def test_kv2_metadata_and_list(client: hvac.Client, raw: httpx.Client) -> None:
    """secret/kv/kv-v2#read-secret-metadata (current_version, versions) and #list-secrets
    (LIST or GET ?list=true; folders end in "/"; nothing to list is 404)."""
    for path in ("ai-swarm/litellm", "ai-swarm/vllm/primary", "other"):
        kv2(client).create_or_update_secret(path, {"k": "v"}, mount_point="secret")
    kv2(client).create_or_update_secret("ai-swarm/litellm", {"k": "w"}, mount_point="secret")
    meta = kv2(client).read_secret_metadata("ai-swarm/litellm", mount_point="secret")["data"]
    assert meta["current_version"] == 2 and set(meta["versions"]) == {"1", "2"}
    assert kv2(client).list_secrets("ai-swarm", mount_point="secret")["data"]["keys"] == [
        "litellm",
        "vllm/",
    ]
    assert raw.get("/v1/secret/metadata/ai-swarm/", params={"list": "true"}).json()["data"][
        "keys"
    ] == ["litellm", "vllm/"]
    assert raw.request("LIST", "/v1/secret/metadata/").json()["data"]["keys"] == [
        "ai-swarm/",
        "other",
    ]
    assert_vault_error(raw.request("LIST", "/v1/secret/metadata/empty"), 404, [])


def test_kv2_max_versions_trims_old_versions(client: hvac.Client) -> None:
    kv2(client).update_metadata("t", max_versions=2, mount_point="secret")
    for n in range(4):
        kv2(client).create_or_update_secret("t", {"n": str(n)}, mount_point="secret")
    meta = kv2(client).read_secret_metadata("t", mount_point="secret")["data"]
    assert sorted(meta["versions"]) == ["3", "4"] and meta["oldest_version"] == 3


def test_unknown_route_is_404(raw: httpx.Client) -> None:
    """A path no engine is mounted at: 404 "no handler for route"."""
    resp = raw.get("/v1/nothing/here")
    assert resp.status_code == 404 and "no handler for route" in resp.json()["errors"][0]


def test_mount_kv_v2_on_a_fresh_vault(fresh: standin.StandinServer) -> None:
    """system/mounts#enable-secrets-engine: a non-dev Vault has no secret/ mount until an
    operator enables kv version 2."""
    client = hvac.Client(url=fresh.url)
    result = client.sys.initialize(secret_shares=1, secret_threshold=1)
    client.sys.submit_unseal_key(result["keys"][0])
    client.token = result["root_token"]
    assert "secret/" not in client.sys.list_mounted_secrets_engines()["data"]
    client.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    assert client.sys.list_mounted_secrets_engines()["data"]["secret/"]["options"] == {
        "version": "2"
    }
    kv2(client).create_or_update_secret("a", {"b": "c"}, mount_point="secret")


# --------------------------------------------------------------------------- modes, CLI, data


def test_never_healthy_reports_sealed() -> None:
    srv = standin.serve("127.0.0.1", 0, root_token=ROOT, mode="never-healthy")
    try:
        assert httpx.get(f"{srv.url}/v1/sys/health").status_code == 503
        resp = httpx.get(f"{srv.url}/v1/secret/data/x", headers={"X-Vault-Token": ROOT})
        assert resp.status_code == 503
    finally:
        srv.shutdown()


def refused(url: str) -> bool:
    try:
        httpx.get(url, timeout=0.5)
    except httpx.TransportError:
        return True
    return False


def test_slow_start_keeps_the_port_closed() -> None:
    """SWARM_STANDIN_MODE=slow-start:N: connections are refused for N seconds, then served."""
    srv = standin.serve("127.0.0.1", 0, root_token=ROOT, mode="slow-start:2")  # room for the first refused() on a loaded machine
    try:
        assert refused(f"{srv.url}/v1/sys/health")
        wait_until(lambda: not refused(f"{srv.url}/v1/sys/health"), 5)
        assert httpx.get(f"{srv.url}/v1/sys/health").status_code == 200
    finally:
        srv.shutdown()


def test_die_after_stops_serving() -> None:
    srv = standin.serve("127.0.0.1", 0, mode="die-after:0.3")
    wait_until(lambda: refused(f"{srv.url}/v1/sys/health"), 5)


def test_command_lines_of_the_real_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hashicorp/vault image runs `server -dev` (env VAULT_DEV_ROOT_TOKEN_ID,
    VAULT_DEV_LISTEN_ADDRESS) or `server -config FILE`; unknown flags are ignored."""
    monkeypatch.setenv("VAULT_DEV_ROOT_TOKEN_ID", "from-env")
    monkeypatch.delenv("VAULT_DEV_LISTEN_ADDRESS", raising=False)
    monkeypatch.delenv("VAULT_LOCAL_CONFIG", raising=False)
    opts = standin.options_from_args(
        ["server", "-dev", "-dev-listen-address=0.0.0.0:8201", "-log-level", "debug"]
    )
    assert (opts["dev"], opts["host"], opts["port"], opts["root_token"]) == (
        True,
        "0.0.0.0",
        8201,
        "from-env",
    )
    opts = standin.options_from_args(
        ["--port", "0", "--host", "127.0.0.1", "--dev-root-token", "t", "--sealed"]
    )
    assert (opts["port"], opts["host"], opts["root_token"], opts["sealed"]) == (
        0,
        "127.0.0.1",
        "t",
        True,
    )
    config = tmp_path / "vault.hcl"
    config.write_text(
        'storage "file" {\n  path = "/vault/file"\n}\nlistener "tcp" {\n'
        '  address = "0.0.0.0:8200"\n  tls_disable = 1\n}\nui = true\n'
    )
    opts = standin.options_from_args(["server", "-config", str(config)])
    assert opts["dev"] is False and opts["port"] == 8200
    assert opts["data_file"] == "/vault/file/swarm-vault-standin.json"


def test_data_file_survives_restart_sealed(tmp_path: Path) -> None:
    """--data FILE: state persists (mode 0600); a restarted non-dev server comes up sealed,
    like a real Vault with file storage, and unseals with the same key."""
    data = str(tmp_path / "vault.json")
    srv = standin.serve("127.0.0.1", 0, dev=False, data_file=data)
    client = hvac.Client(url=srv.url)
    result = client.sys.initialize(secret_shares=1, secret_threshold=1)
    client.sys.submit_unseal_key(result["keys"][0])
    client.token = result["root_token"]
    client.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    kv2(client).create_or_update_secret("p", {"k": "v"}, mount_point="secret")
    srv.shutdown()
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o600
    srv = standin.serve("127.0.0.1", 0, dev=False, data_file=data)
    try:
        client = hvac.Client(url=srv.url, token=result["root_token"])
        assert client.sys.is_sealed() is True
        client.sys.submit_unseal_key(result["keys"][0])
        read = kv2(client).read_secret_version(
            "p", mount_point="secret", raise_on_deleted_version=True
        )
        assert read["data"]["data"] == {"k": "v"}
    finally:
        srv.shutdown()


# --------------------------------------------------------------------------- as a process


def start_process(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    """Run the stand-in file with `python -I -S` (no site-packages: proves it is stdlib-only)."""
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", standin.__file__, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        line = proc.stdout.readline() if ready else ""
        match = re.search(r"api=http://127\.0\.0\.1:(\d+)", line)
        if match:
            return proc, int(match.group(1))
        if proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"stand-in did not start: {proc.stdout.read()}")


def test_server_dev_as_a_process(tmp_path: Path) -> None:
    """`vault server -dev` with VAULT_DEV_ROOT_TOKEN_ID, as the image runs it; SIGTERM -> exit 0."""
    env = {"PATH": os.environ.get("PATH", ""), "VAULT_DEV_ROOT_TOKEN_ID": ROOT}
    proc, port = start_process(["server", "-dev", "--host", "127.0.0.1", "--port", "0"], env)
    try:
        wait_until(lambda: not refused(f"http://127.0.0.1:{port}/v1/sys/health"), 5)
        client = hvac.Client(url=f"http://127.0.0.1:{port}", token=ROOT)
        assert client.auth.token.lookup_self()["data"]["policies"] == ["root"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0


def test_server_config_as_a_process(tmp_path: Path) -> None:
    """`vault server -config=FILE` as the swarm role runs it: listener and file storage come
    from the HCL; the server starts uninitialised (501) and keeps its state there."""
    storage = tmp_path / "file"
    storage.mkdir()
    config = tmp_path / "vault.hcl"
    config.write_text(
        f'storage "file" {{\n  path = "{storage}"\n}}\n'
        'listener "tcp" {\n  address = "127.0.0.1:0"\n  tls_disable = true\n}\n'
    )
    env = {"PATH": os.environ.get("PATH", ""), "SWARM_STANDIN_MODE": "healthy"}
    proc, port = start_process(["server", f"-config={config}"], env)
    try:
        wait_until(lambda: not refused(f"http://127.0.0.1:{port}/v1/sys/health"), 5)
        assert httpx.get(f"http://127.0.0.1:{port}/v1/sys/health").status_code == 501
        hvac.Client(url=f"http://127.0.0.1:{port}").sys.initialize(1, 1)
        assert (storage / "swarm-vault-standin.json").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0


def test_die_after_exits_1_as_a_process() -> None:
    env = {"PATH": os.environ.get("PATH", ""), "SWARM_STANDIN_MODE": "die-after:0.3"}
    proc, _ = start_process(["server", "-dev", "--host", "127.0.0.1", "--port", "0"], env)
    assert proc.wait(timeout=5) == 1
