"""swarm's Vault client against the Vault stand-in (in-process, 127.0.0.1)."""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import threading
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import hvac
import pytest

from orchestrator.clients import vault
from orchestrator.errors import InputError, ServiceError, SwarmError
from orchestrator.lab.standins import vault as standin
from orchestrator.secrets import Secret

ROOT = "hvs.root-for-swarm-tests"
API_KEY = "sk-live-0123456789abcdef"  # a value that must never show up in any text
DB_PASSWORD = "pg-pass-Zq9!x"


@pytest.fixture
def server() -> Iterator[standin.StandinServer]:
    srv = standin.serve("127.0.0.1", 0, root_token=ROOT, mode="healthy")
    yield srv
    srv.shutdown()


@pytest.fixture
def client(server: standin.StandinServer) -> vault.VaultClient:
    return vault.connect(server.url, token=ROOT, env={})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def all_text(err: BaseException) -> str:
    """Everything an exception could show: str, repr, hint, the full formatted traceback."""
    parts = [str(err), repr(err), getattr(err, "hint", "") or ""]
    parts += traceback.format_exception(err)
    return "\n".join(parts)


# --------------------------------------------------------------------------- read / write


def test_write_then_read_gives_secrets(client: vault.VaultClient) -> None:
    version = client.write_secrets(
        "secret", "ai-swarm/litellm", {"API_KEY": Secret(API_KEY), "DB": DB_PASSWORD}, cas=0
    )
    assert version == 1
    values = client.read_secrets("secret", "ai-swarm/litellm")
    assert set(values) == {"API_KEY", "DB"}
    assert all(isinstance(v, Secret) for v in values.values())
    assert values["API_KEY"].reveal() == API_KEY
    assert API_KEY not in repr(values) and API_KEY not in str(values)
    assert API_KEY not in repr(client)


def test_check_and_set_conflict_says_re_run(client: vault.VaultClient) -> None:
    client.write_secrets("secret", "svc", {"K": API_KEY}, cas=0)
    read_version = client.current_version("secret", "svc")
    client.write_secrets("secret", "svc", {"K": "someone-else"}, cas=read_version)
    with pytest.raises(vault.CasConflict) as caught:
        client.write_secrets("secret", "svc", {"K": API_KEY}, cas=read_version)
    assert "changed since you read it" in caught.value.message
    assert "re-run" in (caught.value.hint or "")
    assert client.current_version("secret", "svc") == 2
    assert client.current_version("secret", "never-written") == 0


def test_missing_secret_is_a_clear_error(
    client: vault.VaultClient, server: standin.StandinServer
) -> None:
    with pytest.raises(ServiceError) as caught:
        client.read_secrets("secret", "ai-swarm/nope")
    assert (
        server.url in caught.value.message
        and "no secret at secret/data/ai-swarm/nope" in caught.value.message
    )
    assert "swarm secrets push" in (caught.value.hint or "")


def test_list_secrets_names_and_versions_never_values(client: vault.VaultClient) -> None:
    client.write_secrets("secret", "ai-swarm/litellm", {"API_KEY": API_KEY, "DB": DB_PASSWORD})
    client.write_secrets("secret", "ai-swarm/litellm", {"API_KEY": API_KEY, "DB": DB_PASSWORD})
    client.write_secrets("secret", "ai-swarm/vllm/primary", {"VLLM_API_KEY": API_KEY})
    client.write_secrets("secret", "elsewhere", {"X": API_KEY})
    listing = client.list_secrets("secret", "ai-swarm")
    assert [(i.path, i.version, i.keys) for i in listing] == [
        ("ai-swarm/litellm", 2, ("API_KEY", "DB")),
        ("ai-swarm/vllm/primary", 1, ("VLLM_API_KEY",)),
    ]
    assert API_KEY not in repr(listing) and DB_PASSWORD not in repr(listing)
    assert client.list_secrets("secret", "nothing-here") == []


def test_list_marks_soft_deleted_secrets(
    client: vault.VaultClient, server: standin.StandinServer
) -> None:
    client.write_secrets("secret", "app/gone", {"K": API_KEY})
    hvac.Client(url=server.url, token=ROOT).secrets.kv.v2.delete_latest_version_of_secret(
        "app/gone", mount_point="secret"
    )
    [info] = client.list_secrets("secret", "app")
    assert info.deleted is True and info.keys == ()


def test_missing_reports_absent_paths_and_keys(client: vault.VaultClient) -> None:
    client.write_secrets("secret", "ai-swarm/litellm", {"API_KEY": API_KEY})
    missing = client.missing(
        "secret",
        {
            "ai-swarm/litellm": {"API_KEY", "MASTER_KEY"},
            "ai-swarm/grafana": {"ADMIN_PASSWORD"},
        },
    )
    assert missing == {"ai-swarm/litellm": {"MASTER_KEY"}, "ai-swarm/grafana": {"ADMIN_PASSWORD"}}
    assert client.missing("secret", {"ai-swarm/litellm": {"API_KEY"}}) == {}


def test_push_is_idempotent_and_reports_key_names(client: vault.VaultClient) -> None:
    first = client.push(
        "secret", "ai-swarm/litellm", {"API_KEY": Secret(API_KEY), "DB": DB_PASSWORD}
    )
    assert (first.version, first.changed, first.added) == (1, True, ("API_KEY", "DB"))
    same = client.push("secret", "ai-swarm/litellm", {"API_KEY": Secret(API_KEY)})
    assert (same.version, same.changed) == (1, False)
    changed = client.push("secret", "ai-swarm/litellm", {"API_KEY": "sk-rotated-key"})
    assert (changed.version, changed.updated, changed.removed) == (2, ("API_KEY",), ())
    replaced = client.push("secret", "ai-swarm/litellm", {"DB": DB_PASSWORD}, replace=True)
    assert (replaced.version, replaced.removed) == (3, ("API_KEY",))
    assert set(client.read_secrets("secret", "ai-swarm/litellm")) == {"DB"}
    assert API_KEY not in repr([first, same, changed, replaced])


def test_push_over_a_soft_deleted_version(
    client: vault.VaultClient, server: standin.StandinServer
) -> None:
    client.push("secret", "app", {"K": API_KEY})
    hvac.Client(url=server.url, token=ROOT).secrets.kv.v2.delete_latest_version_of_secret(
        "app", mount_point="secret"
    )
    result = client.push("secret", "app", {"K": API_KEY})
    assert (result.version, result.changed, result.added) == (2, True, ("K",))


def test_require_secrets_names_every_gap(
    client: vault.VaultClient, server: standin.StandinServer
) -> None:
    client.push("secret", "ai-swarm/litellm", {"API_KEY": API_KEY})
    client.require_secrets("secret", {"ai-swarm/litellm": {"API_KEY"}})
    with pytest.raises(ServiceError) as caught:
        client.require_secrets(
            "secret", {"ai-swarm/litellm": {"API_KEY", "SALT"}, "ai-swarm/vllm": {"VLLM_API_KEY"}}
        )
    message = caught.value.message
    assert server.url in message
    assert (
        "secret/ai-swarm/litellm: SALT" in message
        and "secret/ai-swarm/vllm: VLLM_API_KEY" in message
    )
    assert "swarm secrets push" in (caught.value.hint or "")


def test_non_string_values_become_text(
    client: vault.VaultClient, server: standin.StandinServer
) -> None:
    hvac.Client(url=server.url, token=ROOT).secrets.kv.v2.create_or_update_secret(
        "typed", {"PORT": 5432, "FLAGS": ["a"]}, mount_point="secret"
    )
    values = client.read_secrets("secret", "typed")
    assert values["PORT"].reveal() == "5432" and values["FLAGS"].reveal() == '["a"]'


# --------------------------------------------------------------------------- failures


def test_sealed_vault_message(client: vault.VaultClient, server: standin.StandinServer) -> None:
    hvac.Client(url=server.url, token=ROOT).sys.seal()
    with pytest.raises(ServiceError) as caught:
        client.read_secrets("secret", "x")
    err = caught.value
    assert err.message == f"Vault at {server.url} is sealed"
    assert "vault operator unseal" in (err.hint or "") and "swarm vault unseal" in (err.hint or "")
    with pytest.raises(ServiceError, match="is sealed"):
        client.check_token()
    assert client.status().sealed is True


def test_uninitialised_vault_message() -> None:
    srv = standin.serve("127.0.0.1", 0, dev=False)
    try:
        client = vault.connect(srv.url, token="whatever", env={})
        assert client.status().initialized is False
        with pytest.raises(ServiceError, match="is not initialised") as caught:
            client.require_unsealed()
        assert "swarm vault init" in (caught.value.hint or "")
    finally:
        srv.shutdown()


def test_wrong_token_is_permission_message(server: standin.StandinServer) -> None:
    client = vault.connect(server.url, token="hvs.wrong-token-value", env={})
    with pytest.raises(ServiceError) as caught:
        client.read_secrets("secret", "ai-swarm/litellm")
    err = caught.value
    assert server.url in err.message and "token lacks permission" in err.message
    assert "VAULT_TOKEN" in (err.hint or "")
    assert "hvs.wrong-token-value" not in all_text(err)
    with pytest.raises(ServiceError, match="lacks permission"):
        client.check_token()


def test_policy_limited_token_cannot_write(server: standin.StandinServer) -> None:
    root = hvac.Client(url=server.url, token=ROOT)
    root.sys.create_or_update_policy("ro", 'path "secret/data/*" { capabilities = ["read"] }')
    token = root.auth.token.create(policies=["ro"])["auth"]["client_token"]
    client = vault.connect(server.url, token=token, env={})
    with pytest.raises(ServiceError, match="lacks permission to write secret/data/app") as caught:
        client.write_secrets("secret", "app", {"K": API_KEY})
    assert API_KEY not in all_text(caught.value)
    assert client.check_token()["policies"] == ["default", "ro"]


def test_unreachable_vault_message() -> None:
    addr = f"http://127.0.0.1:{free_port()}"
    client = vault.connect(addr, token=ROOT, env={}, timeout=2)
    with pytest.raises(ServiceError) as caught:
        client.write_secrets("secret", "x", {"K": API_KEY})
    err = caught.value
    assert f"Vault at {addr} is unreachable" in err.message
    assert "VAULT_ADDR" in (err.hint or "")
    assert API_KEY not in all_text(err) and ROOT not in all_text(err)


class NotVault(BaseHTTPRequestHandler):
    """Something that is not Vault: bare 404s, like a proxy on an unrouted address."""

    def do_GET(self) -> None:
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_bare_404_is_not_taken_for_a_missing_secret() -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), NotVault)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        client = vault.connect(f"http://127.0.0.1:{httpd.server_address[1]}", token=ROOT, env={})
        with pytest.raises(ServiceError, match="that is not Vault"):
            client.missing("secret", {"ai-swarm/x": {"K"}})
        with pytest.raises(ServiceError, match="unexpected sys/health answer 404"):
            client.require_unsealed()
    finally:
        httpd.shutdown()
        httpd.server_close()


# --------------------------------------------------------------------------- auth


def make_approle(server: standin.StandinServer) -> tuple[str, str]:
    root = hvac.Client(url=server.url, token=ROOT)
    root.sys.enable_auth_method("approle")
    root.sys.create_or_update_policy(
        "swarm", 'path "secret/*" { capabilities = ["create", "read", "update", "list"] }'
    )
    root.auth.approle.create_or_update_approle("swarm", token_policies=["swarm"])
    role_id = root.auth.approle.read_role_id("swarm")["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id("swarm")["data"]["secret_id"]
    return role_id, secret_id


def test_approle_from_env(server: standin.StandinServer) -> None:
    role_id, secret_id = make_approle(server)
    env = {"VAULT_ADDR": server.url, "VAULT_ROLE_ID": role_id, "VAULT_SECRET_ID": secret_id}
    client = vault.connect(env=env)
    assert client.auth_method == "approle"
    client.write_secrets("secret", "ai-swarm/x", {"K": API_KEY})
    assert client.read_secrets("secret", "ai-swarm/x")["K"].reveal() == API_KEY


def test_approle_from_files(server: standin.StandinServer, tmp_path: Path) -> None:
    role_id, secret_id = make_approle(server)
    (tmp_path / "role_id").write_text(role_id + "\n")
    (tmp_path / "secret_id").write_text(secret_id)
    for name in ("role_id", "secret_id"):
        (tmp_path / name).chmod(0o600)
    client = vault.connect(
        server.url, role_id_file=tmp_path / "role_id", secret_id_file=tmp_path / "secret_id", env={}
    )
    assert client.check_token()["policies"] == ["default", "swarm"]


def test_credential_files_readable_by_others_are_refused_before_connecting(tmp_path: Path) -> None:
    (tmp_path / "role_id").write_text("r")
    (tmp_path / "secret_id").write_text("s")
    (tmp_path / "secret_id").chmod(0o640)
    (tmp_path / "role_id").chmod(0o600)
    with pytest.raises(InputError) as err:  # the address is unreachable: refused before any request
        vault.connect("http://198.18.0.254:9", role_id_file=tmp_path / "role_id",
                      secret_id_file=tmp_path / "secret_id", env={})
    assert "readable by others (mode 0640)" in str(err.value)
    assert f"chmod 600 {tmp_path / 'secret_id'}" in str(err.value)


def test_approle_wrong_secret_id(server: standin.StandinServer) -> None:
    role_id, _ = make_approle(server)
    wrong = "-".join(
        ["not", "the", "secret", "id"]
    )  # built so the traceback's source lines hold no copy
    with pytest.raises(ServiceError, match="AppRole login failed") as caught:
        vault.connect(server.url, role_id=role_id, secret_id=wrong, env={})
    assert "VAULT_SECRET_ID" in (caught.value.hint or "")
    assert wrong not in all_text(caught.value)
    assert role_id not in all_text(caught.value)


def test_connect_precedence_and_missing_credentials(server: standin.StandinServer) -> None:
    env = {"VAULT_ADDR": server.url, "VAULT_TOKEN": "hvs.env-token"}
    assert vault.connect(token=ROOT, env=env).check_token()["policies"] == ["root"]
    with pytest.raises(ServiceError, match="lacks permission"):
        vault.connect(env=env).check_token()
    with pytest.raises(InputError, match="no credentials"):
        vault.connect(server.url, env={})
    with pytest.raises(InputError, match="no Vault address"):
        vault.connect(token=ROOT, env={})
    with pytest.raises(InputError, match="both a role_id and a secret_id"):
        vault.connect(server.url, role_id="only-role", env={})


# --------------------------------------------------------------------------- secrecy


def test_secret_values_never_appear_in_errors_reprs_or_logs(
    server: standin.StandinServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Every failure path that had a secret in hand: none of them may show it anywhere."""
    caplog.set_level(logging.DEBUG)
    role_id, secret_id = make_approle(server)
    values = {"API_KEY": Secret(API_KEY, "API_KEY"), "DB": Secret(DB_PASSWORD, "DB")}
    good = vault.connect(server.url, token=ROOT, env={})
    good.write_secrets("secret", "app", values, cas=0)
    read = good.read_secrets("secret", "app")
    errors: list[BaseException] = []

    def capture(func: object, *args: object, **kwargs: object) -> None:
        try:
            func(*args, **kwargs)  # type: ignore[operator]
        except SwarmError as err:
            errors.append(err)
        else:
            raise AssertionError(f"{func} did not fail")

    capture(good.write_secrets, "secret", "app", values, cas=0)  # CAS conflict
    capture(vault.connect(server.url, token=API_KEY, env={}).write_secrets, "secret", "a", values)
    capture(vault.connect, server.url, role_id=role_id, secret_id=DB_PASSWORD, env={})
    unreachable = vault.connect(f"http://127.0.0.1:{free_port()}", token=API_KEY, env={}, timeout=1)
    capture(unreachable.write_secrets, "secret", "app", values)
    hvac.Client(url=server.url, token=ROOT).sys.seal()
    capture(good.write_secrets, "secret", "app", values, cas=1)
    capture(good.read_secrets, "secret", "app")
    assert len(errors) == 6
    texts = [all_text(e) for e in errors] + [repr(read), str(read), repr(good), caplog.text]
    for text in texts:
        for value in (API_KEY, DB_PASSWORD, ROOT, secret_id):
            assert value not in text


# --------------------------------------------------------------------------- env files


def test_parse_env_file(tmp_path: Path) -> None:
    path = tmp_path / ".env.production"
    path.write_text(
        "# LiteLLM\n"
        "\n"
        "export LITELLM_MASTER_KEY=sk-master-1\n"
        "PLAIN = value with spaces   # trailing comment\n"
        "HASH_INSIDE=abc#def\n"
        "SINGLE='literal $HOME \\n'\n"
        'DOUBLE="line1\\nline2 \\"quoted\\""\n'
        'MULTI="first\n'
        'second"\n'
        "EMPTY=\n"
        'EMPTY_QUOTED=""  # nothing\n'
        "DOTTED.KEY-1=x\n"
    )
    values = vault.parse_env_file(path)
    revealed = {k: v.reveal() for k, v in values.items()}
    assert revealed == {
        "LITELLM_MASTER_KEY": "sk-master-1",
        "PLAIN": "value with spaces",
        "HASH_INSIDE": "abc#def",
        "SINGLE": "literal $HOME \\n",
        "DOUBLE": 'line1\nline2 "quoted"',
        "MULTI": "first\nsecond",
        "EMPTY": "",
        "EMPTY_QUOTED": "",
        "DOTTED.KEY-1": "x",
    }
    assert "sk-master-1" not in repr(values)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("GOOD=1\nthis line has the secret sk-leak-999 and no equals\n", 2),
        ("1BAD=sk-leak-999\n", 1),
        ('A="sk-leak-999\n', 1),
        ("A='sk-leak-999\n", 1),
        ('A="sk-leak-999" trailing\n', 1),
    ],
)
def test_env_file_errors_name_the_line_not_its_content(
    tmp_path: Path, text: str, line: int
) -> None:
    path = tmp_path / "bad.env"
    path.write_text(text)
    with pytest.raises(InputError) as caught:
        vault.parse_env_file(path)
    assert f"line {line}" in str(caught.value) and str(path) in str(caught.value)
    assert "sk-leak-999" not in all_text(caught.value)


def test_env_file_missing(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read env file"):
        vault.parse_env_file(tmp_path / "nope.env")


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_a_fresh_vault(tmp_path: Path) -> None:
    srv = standin.serve("127.0.0.1", 0, dev=False)
    key_file = tmp_path / "keys" / "vault-init.json"
    try:
        result = vault.bootstrap(srv.url, key_file, enable_approle=True)
        assert result.initialized is True
        assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
        doc = json.loads(key_file.read_text())
        assert set(doc) >= {"unseal_keys_b64", "unseal_keys_hex", "root_token", "unseal_threshold"}
        assert doc["root_token"] not in repr(result)
        client = vault.connect(srv.url, token=doc["root_token"], env={})
        assert client.status().sealed is False
        client.write_secrets("secret", "ai-swarm/x", {"K": "v"}, cas=0)
        mounts = hvac.Client(url=srv.url, token=doc["root_token"]).sys.list_auth_methods()["data"]
        assert "approle/" in mounts
        # Sealed again (e.g. after a restart): bootstrap unseals from the same file.
        hvac.Client(url=srv.url, token=doc["root_token"]).sys.seal()
        again = vault.bootstrap(srv.url, key_file)
        assert again.initialized is False and client.status().sealed is False
    finally:
        srv.shutdown()


def test_bootstrap_refuses_to_overwrite_a_key_file(tmp_path: Path) -> None:
    srv = standin.serve("127.0.0.1", 0, dev=False)
    key_file = tmp_path / "vault-init.json"
    key_file.write_text("{}")
    try:
        with pytest.raises(ServiceError, match="refusing to overwrite"):
            vault.bootstrap(srv.url, key_file)
        assert hvac.Client(url=srv.url).sys.is_initialized() is False
    finally:
        srv.shutdown()


def test_bootstrap_checks_the_key_file_can_be_written_first(tmp_path: Path) -> None:
    """Keys Vault hands out once must not be lost to an unwritable path."""
    srv = standin.serve("127.0.0.1", 0, dev=False)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    try:
        with pytest.raises(InputError, match="cannot create the Vault key file"):
            vault.bootstrap(srv.url, blocker / "keys.json")
        assert hvac.Client(url=srv.url).sys.is_initialized() is False
    finally:
        srv.shutdown()


def test_bootstrap_initialised_vault_without_key_file(
    server: standin.StandinServer, tmp_path: Path
) -> None:
    with pytest.raises(ServiceError, match="already initialised"):
        vault.bootstrap(server.url, tmp_path / "absent.json")


def test_unseal_from_key_file(tmp_path: Path) -> None:
    srv = standin.serve("127.0.0.1", 0, dev=False)
    key_file = tmp_path / "vault-init.json"
    try:
        vault.bootstrap(srv.url, key_file, shares=3, threshold=2)
        token = json.loads(key_file.read_text())["root_token"]
        hvac.Client(url=srv.url, token=token).sys.seal()
        assert vault.unseal(srv.url, key_file).sealed is False
    finally:
        srv.shutdown()


def test_bootstrap_unreachable(tmp_path: Path) -> None:
    addr = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServiceError, match="unreachable"):
        vault.bootstrap(addr, tmp_path / "k.json", timeout=1)
    assert not (tmp_path / "k.json").exists()


def test_the_documented_approle_policy_is_enough(server: standin.StandinServer) -> None:
    """docs/vault.md's `swarm` policy covers push, list, check and read - and nothing else."""
    root = hvac.Client(url=server.url, token=ROOT)
    root.sys.enable_auth_method("approle")
    root.sys.create_or_update_policy(
        "swarm",
        'path "secret/data/ai-swarm/*"     { capabilities = ["create", "read", "update"] }\n'
        'path "secret/metadata/ai-swarm/*" { capabilities = ["read", "list"] }\n'
        'path "secret/metadata/ai-swarm"   { capabilities = ["list"] }\n',
    )
    root.auth.approle.create_or_update_approle("swarm", token_policies=["swarm"], token_ttl="1h")
    env = {
        "VAULT_ADDR": server.url,
        "VAULT_ROLE_ID": root.auth.approle.read_role_id("swarm")["data"]["role_id"],
        "VAULT_SECRET_ID": root.auth.approle.generate_secret_id("swarm")["data"]["secret_id"],
    }
    client = vault.connect(env=env)
    assert client.push("secret", "ai-swarm/litellm", {"K": API_KEY}).version == 1
    assert client.push("secret", "ai-swarm/litellm", {"K": "rotated-value"}).version == 2
    assert [i.path for i in client.list_secrets("secret", "ai-swarm")] == ["ai-swarm/litellm"]
    assert client.missing("secret", {"ai-swarm/litellm": {"K"}}) == {}
    assert client.read_secrets("secret", "ai-swarm/litellm")["K"].reveal() == "rotated-value"
    with pytest.raises(ServiceError, match="lacks permission"):
        client.push("secret", "other/path", {"K": API_KEY})


# --------------------------------------------------------------------------- the one token rule


def test_hvac_never_picks_up_the_users_vault_token_file(server: standin.StandinServer, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A root token left in ~/.vault-token by the vault CLI is not swarm's to send: a client
    given no token sends none (hvac alone would read that file)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("VAULT_TOKEN", raising=False)
    (tmp_path / ".vault-token").write_text(ROOT)
    anonymous = vault.VaultClient(server.url)
    with pytest.raises(ServiceError, match="lacks permission"):
        anonymous.check_token()
    status = vault.unseal(server.url, _key_file(tmp_path))  # bootstrap/unseal: no token either
    assert status.sealed is False


def _key_file(tmp_path: Path) -> Path:
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"unseal_keys_hex": ["00"], "unseal_threshold": 1, "root_token": "x"}))
    keys.chmod(0o600)
    return keys


def test_the_token_rule_is_token_file_then_vault_token_then_approle(tmp_path: Path) -> None:
    from orchestrator.clients.vault_kv import AppRole, credentials

    token_file = tmp_path / "token"
    env = {"VAULT_TOKEN": "hvs.from-env", "VAULT_ROLE_ID": "r", "VAULT_SECRET_ID": "s"}
    assert credentials(token_file, env).reveal() == "hvs.from-env"  # type: ignore[union-attr]
    token_file.write_text(json.dumps({"root_token": "hvs.from-file"}))
    token_file.chmod(0o600)
    assert credentials(token_file, env).reveal() == "hvs.from-file"  # type: ignore[union-attr]
    role = credentials(None, {"VAULT_ROLE_ID": "r", "VAULT_SECRET_ID": "s"})
    assert isinstance(role, AppRole) and role.role_id.reveal() == "r"
    with pytest.raises(InputError, match="no credentials"):
        credentials(None, {})
    token_file.chmod(0o644)
    with pytest.raises(InputError, match="readable by others"):
        credentials(token_file, env)
