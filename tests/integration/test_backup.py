"""Backups proven by a restore, on the lab: for each stateful service, known data is written,
`swarm backup` takes it, the data is destroyed, `swarm restore` puts it back, and the data is
read again through the service's own client — psql for the real PostgreSQL 15, redis-cli for
the real Redis 7, Qdrant's HTTP API and hvac for the Qdrant and Vault stand-ins.

About two and a half minutes on the lab, on the module's deployed fleet (a no-op deploy when
an earlier module deployed it): the backup of all four takes seconds; most of the rest is the
re-gates (LiteLLM, which depends on PostgreSQL and Redis, takes ~20 s to answer again; the
PostgreSQL and Redis restores are gated with `quick_inventory`'s short hold: what they prove
is the data coming back and the dependents healthy again, not the hold). Each swarm run is bounded (`run`: SIGTERM past its limit, so
swarm unwinds and unlocks, then a failure). What the module writes — the table, the keys, the
collection, the secret, the backups, the gauges — is removed at its end; Vault is left unsealed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import hvac
import pytest

from tests.integration.labtools import REPO, SECRET_VALUES, node_sh, ok, quick_inventory

pytestmark = pytest.mark.lab

KNOWN = "kept-by-the-backup"
SERVICES = ("vault", "postgres", "redis", "qdrant")
COLLECTION = "swarm-backup-probe"       # the module's own: no other test's collection is touched
SECRET_PATH = "ai-swarm/backup-probe"
BACKUP_LIMIT_S = 90.0                   # hang guards, several times what the lab takes
RESTORE_LIMIT_S = 180.0
BACKUP_DIRS = "/opt/ai-swarm/backups"


def swarm(lab, *args: str, inventory: Path | None = None,
          limit: float = RESTORE_LIMIT_S) -> subprocess.CompletedProcess[str]:
    """labtools.swarm, bounded: past `limit` swarm gets SIGTERM (it finishes the step it is in,
    writes its audit and unlocks), and the test fails saying so."""
    env = {**os.environ, "SWARM_STATE_DIR": str(lab.paths.root / "state")}
    argv = [sys.executable, "-m", "orchestrator.cli", "--project", str(REPO),
            "-i", str(inventory or lab.inventory_path), *args]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                          cwd=REPO) as proc:
        try:
            out, err = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            try:
                out, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            pytest.fail(f"swarm {' '.join(args)} still running after {limit:.0f}s (stopped):\n{out}\n{err}")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def psql(lab, sql: str) -> str:
    return node_sh(lab, "oracle", "docker", "exec", "swarm-oracle-postgres-1", "psql", "-X", "-U", "litellm",
                   "-d", "postgres" if sql.startswith("DROP DATABASE") else "litellm", "-Atc", sql)


def redis_cli(lab, *args: str) -> str:
    # the password comes from REDISCLI_AUTH in the container's environment, never an argument
    return node_sh(lab, "oracle", "docker", "exec", "swarm-oracle-redis-1", "redis-cli", *args).strip()


def qdrant(lab) -> str:
    return f"http://{lab.nodes['starlord']}:6333"


def vault_client(lab) -> hvac.Client:
    keys = json.loads((lab.paths.root / "vault-keys.json").read_text())
    return hvac.Client(url=f"http://{lab.nodes['oracle']}:8200", token=keys["root_token"])


def key_file(lab) -> Path:
    return lab.paths.root / "vault-keys.json"


def backups_on(lab, node: str) -> set[str]:
    """Every <service>/<id> (and temp directory) under the node's backups/."""
    found = node_sh(lab, node, "sh", "-c", f"cd {BACKUP_DIRS} 2>/dev/null && find . -mindepth 2 -maxdepth 2 || true")
    return {line.removeprefix("./") for line in found.splitlines() if line.strip()}


@pytest.fixture(scope="module", autouse=True)
def leaves_the_fleet_as_found(deployed) -> Iterator[None]:
    """Set up before the module's first test, undone after its last: what the tests wrote goes,
    the backups they took go, and Vault is unsealed (a failed Vault restore leaves it sealed)."""
    lab = deployed
    before = {n: backups_on(lab, n) for n in ("oracle", "starlord")}
    yield
    client = vault_client(lab)
    if client.sys.is_sealed():
        ok(swarm(lab, "vault", "unseal", "--key-file", str(key_file(lab)), limit=60))
    client.secrets.kv.v2.delete_metadata_and_all_versions(path=SECRET_PATH, mount_point="secret")
    psql(lab, "DROP TABLE IF EXISTS notes")
    redis_cli(lab, "del", "swarm:probe", "swarm:copy")
    httpx.delete(f"{qdrant(lab)}/collections/{COLLECTION}", timeout=10)
    for node, had in before.items():
        added = sorted(backups_on(lab, node) - had)
        if added:
            node_sh(lab, node, "rm", "-rf", *(f"{BACKUP_DIRS}/{path}" for path in added))
    (lab.paths.root / "backup.prom").unlink(missing_ok=True)


@pytest.fixture(scope="module")
def backed_up(deployed):
    """Known data in all four stores, then one `swarm backup` of the fleet."""
    lab = deployed
    psql(lab, "DROP TABLE IF EXISTS notes; CREATE TABLE notes(id int PRIMARY KEY, body text); "
              f"INSERT INTO notes VALUES (1, '{KNOWN}')")
    assert redis_cli(lab, "set", "swarm:probe", KNOWN) == "OK"
    base = qdrant(lab)
    httpx.delete(f"{base}/collections/{COLLECTION}", timeout=10)
    assert httpx.put(f"{base}/collections/{COLLECTION}", json={"vectors": {"size": 3, "distance": "Cosine"}},
                     timeout=10).status_code == 200
    httpx.put(f"{base}/collections/{COLLECTION}/points", timeout=10,
              json={"points": [{"id": 7, "vector": [0.1, 0.2, 0.3], "payload": {"title": KNOWN}}]})
    vault_client(lab).secrets.kv.v2.create_or_update_secret(path=SECRET_PATH,
                                                            secret={"value": KNOWN}, mount_point="secret")
    started = time.monotonic()
    result = ok(swarm(lab, "backup", "--metrics", str(lab.paths.root / "backup.prom"), limit=BACKUP_LIMIT_S))
    print(f"swarm backup of {len(SERVICES)} services on the lab: {time.monotonic() - started:.1f}s")  # noqa: T201
    return lab, result


def test_backup_prints_what_it_wrote_where_and_no_secret(backed_up) -> None:
    lab, result = backed_up
    lines = {line.split()[1]: line for line in result.stdout.splitlines() if line.split()[:1] in (["oracle"], ["starlord"])}
    assert set(lines) == set(SERVICES)
    for service in SERVICES:
        assert re.search(rf"/opt/ai-swarm/backups/{service}/\d{{8}}T\d{{6}}Z .*sha256 [0-9a-f]{{64}}", lines[service])
    assert "litellm.sql" in lines["postgres"] and "dump.rdb" in lines["redis"] and COLLECTION in lines["qdrant"]
    assert "contains secrets" in lines["vault"] and "storage.tar" not in result.stdout + result.stderr
    assert not [v for v in SECRET_VALUES if v in result.stdout + result.stderr]
    assert "4 of 4 service(s) backed up" in result.stdout


def test_backups_are_private_on_their_nodes_with_sums_and_a_manifest(backed_up) -> None:
    lab, _ = backed_up
    loose = node_sh(lab, "oracle", "find", "/opt/ai-swarm/backups/vault", "/opt/ai-swarm/backups/postgres",
                    "(", "-type", "f", "!", "-perm", "600", ")", "-o", "(", "-type", "d", "!", "-perm", "700", ")")
    assert loose == ""
    listed = node_sh(lab, "oracle", "sh", "-c", "cd /opt/ai-swarm/backups/postgres/* && sha256sum -c SHA256SUMS "
                     "&& cat manifest.json")
    assert "litellm.sql: OK" in listed
    manifest = json.loads(listed.splitlines()[-1])
    assert manifest["service"] == "postgres" and manifest["method"] == "pg_dump" and manifest["node"] == "oracle"
    assert manifest["size"] > 0 and len(manifest["checksum"]) == 64 and manifest["swarm_version"]
    audit = node_sh(lab, "oracle", "tail", "-n", "3", "/opt/ai-swarm/audit.log")
    assert '"action": "backup"' in audit and not [v for v in SECRET_VALUES if v in audit]


def test_the_gauges_say_each_service_was_just_backed_up(backed_up) -> None:
    lab, _ = backed_up
    text = (lab.paths.root / "backup.prom").read_text()
    for service in SERVICES:
        found = re.search(rf'swarm_backup_last_success_timestamp_seconds{{service="{service}",[^}}]*}} ([0-9.]+)', text)
        assert found and time.time() - float(found.group(1)) < 600
        assert re.search(rf'swarm_backup_last_run_success{{service="{service}",[^}}]*}} 1', text)


def test_preflight_sees_fresh_backups(backed_up) -> None:
    lab, _ = backed_up
    report = json.loads(swarm(lab, "preflight", "--phase", "2", "--output", "json").stdout)
    checks = {r["subject"]: r for r in report["results"] if r["check"] == "backup"}
    assert checks["postgres"]["status"] == checks["redis"]["status"] == "pass"


def test_postgres_dropped_database_comes_back(backed_up, tmp_path: Path) -> None:
    lab, _ = backed_up
    psql(lab, "DROP DATABASE litellm WITH (FORCE)")
    result = ok(swarm(lab, "restore", "--service", "postgres", inventory=quick_inventory(lab, tmp_path)))
    assert "stopped and started again: litellm on oracle" in result.stdout
    assert "healthy: postgres, litellm" in result.stdout
    assert psql(lab, "SELECT body FROM notes WHERE id = 1").strip() == KNOWN


def test_redis_flushed_key_comes_back(backed_up, tmp_path: Path) -> None:
    lab, _ = backed_up
    redis_cli(lab, "flushdb")
    assert redis_cli(lab, "get", "swarm:probe") == ""
    result = ok(swarm(lab, "restore", "--service", "redis", inventory=quick_inventory(lab, tmp_path)))
    assert "healthy: redis, litellm" in result.stdout
    assert redis_cli(lab, "get", "swarm:probe") == KNOWN


def test_qdrant_deleted_collection_comes_back_only_with_force(backed_up) -> None:
    lab, _ = backed_up
    base = qdrant(lab)
    httpx.delete(f"{base}/collections/{COLLECTION}", timeout=10)
    assert httpx.get(f"{base}/collections/{COLLECTION}", timeout=10).status_code == 404
    refused = swarm(lab, "restore", "--service", "qdrant")
    assert refused.returncode == 2 and "protected on starlord" in refused.stderr
    before = node_sh(lab, "starlord", "docker", "inspect", "-f", "{{.Id}} {{.State.StartedAt}}", "swarm-starlord-qdrant-1")
    ok(swarm(lab, "restore", "--service", "qdrant", "--force", "qdrant"))
    point = httpx.get(f"{base}/collections/{COLLECTION}/points/7", timeout=10).json()["result"]
    assert point["payload"] == {"title": KNOWN} and point["vector"] == [0.1, 0.2, 0.3]
    after = node_sh(lab, "starlord", "docker", "inspect", "-f", "{{.Id}} {{.State.StartedAt}}", "swarm-starlord-qdrant-1")
    assert before == after  # protected: restored through its API, never stopped or recreated


def test_vault_deleted_secret_comes_back(backed_up) -> None:
    lab, _ = backed_up
    client = vault_client(lab)
    client.secrets.kv.v2.delete_metadata_and_all_versions(path=SECRET_PATH, mount_point="secret")
    with pytest.raises(hvac.exceptions.InvalidPath):
        client.secrets.kv.v2.read_secret_version(path=SECRET_PATH, mount_point="secret",
                                                 raise_on_deleted_version=True)
    result = ok(swarm(lab, "restore", "--service", "vault", "--key-file", str(key_file(lab))))
    assert "Vault: unsealed" in result.stdout and not [v for v in SECRET_VALUES if v in result.stdout + result.stderr]
    read = client.secrets.kv.v2.read_secret_version(path=SECRET_PATH, mount_point="secret",
                                                    raise_on_deleted_version=True)
    assert read["data"]["data"] == {"value": KNOWN}
    ok(swarm(lab, "secrets", "check"))  # every pushed secret is back too


def test_a_copy_on_another_node_restores_a_lost_backup(deployed, tmp_path: Path) -> None:
    lab = deployed
    inventory = quick_inventory(lab, tmp_path, lambda d: d["nodes"]["oracle"].setdefault("vars", {}).update(
        backup_copy_to="starlord"))
    redis_cli(lab, "set", "swarm:copy", KNOWN)
    result = ok(swarm(lab, "backup", "--service", "redis", inventory=inventory, limit=BACKUP_LIMIT_S))
    assert "copy verified on starlord" in result.stdout
    backup_id = re.search(r"backups/redis/(\d{8}T\d{6}Z)", result.stdout).group(1)  # type: ignore[union-attr]
    node_sh(lab, "starlord", "sh", "-c", f"cd /opt/ai-swarm/backups/redis/{backup_id} && sha256sum -c SHA256SUMS")
    node_sh(lab, "oracle", "rm", "-rf", f"/opt/ai-swarm/backups/redis/{backup_id}")  # the first disk lost it
    redis_cli(lab, "del", "swarm:copy")
    restored = ok(swarm(lab, "restore", "--service", "redis", "--from", backup_id, inventory=inventory))
    assert "brought back from starlord" in restored.stdout
    assert redis_cli(lab, "get", "swarm:copy") == KNOWN


def test_restore_waits_for_no_deploy_it_refuses_while_one_holds_the_lock(backed_up) -> None:
    lab, _ = backed_up
    holder = json.dumps({"by": "alice@ops", "host": "elsewhere", "pid": 1, "since": "now", "phases": [2],
                         "action": "deploy"})
    node_sh(lab, "oracle", "sh", "-c", 'mkdir /opt/ai-swarm/.lock && printf %s "$1" > /opt/ai-swarm/.lock/holder.json',
            "sh", holder)
    try:
        before = node_sh(lab, "oracle", "docker", "inspect", "-f", "{{.State.StartedAt}}", "swarm-oracle-litellm-1")
        result = swarm(lab, "restore", "--service", "postgres")
        assert result.returncode == 4 and "alice@ops" in result.stderr
        after = node_sh(lab, "oracle", "docker", "inspect", "-f", "{{.State.StartedAt}}", "swarm-oracle-litellm-1")
        assert before == after  # nothing was stopped
    finally:
        node_sh(lab, "oracle", "rm", "-rf", "/opt/ai-swarm/.lock")
