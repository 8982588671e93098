"""The planner's first question: a plan record left by a full run lets the next one cost one
command per node; whenever the record cannot vouch for the answer — or cannot be trusted —
the deploy goes on with the same session (same connections, same locks, same look)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.engine.context import new_run
from orchestrator.engine.first import FirstAnswer, first_question
from orchestrator.engine.record import (
    PlanCache,
    PlanRecord,
    inputs_digest,
    secrets_digest,
)
from orchestrator.engine.session import Session
from orchestrator.events import EventBus
from orchestrator.secrets import Secret
from orchestrator.transport.fleet import Fleet
from tests.unit.engine.replay_fleet import COMMIT, MOVED, REPO, NodeCase, ReplayFleet

KEY = "k" * 64


def HUB(record: PlanRecord) -> dict[str, str | None]:  # noqa: N802 - the hub boundary: `main` has not moved
    return dict(record.weights)
INVENTORY = REPO / "inventory" / "swarm.yml"


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[ReplayFleet, PlanRecord, PlanCache]:
    """A full no-op run of phases 2-4 that left its plan record."""
    fleet = ReplayFleet()
    cache = PlanCache(tmp_path / "plans")
    fleet.deploy(phases="2-4", state_dir=tmp_path, plan_cache=cache, plan_key=KEY)
    record = cache.load(KEY, INVENTORY)
    assert record is not None
    return fleet, record, cache


def replay_again(fleet: ReplayFleet, **cases: NodeCase) -> Fleet:
    fleet.transports.clear()
    return Fleet([fleet.node(n, cases.get(n)) for n in ("oracle", "starlord", "thanos")])


def session(record: PlanRecord, transports: Fleet, optional: tuple[str, ...] = ()) -> Session:
    ctx = new_run("tester", "deploy", record.holder_phases)
    return Session(transports, ctx, EventBus(), {n: p.deploy_root for n, p in record.nodes.items()},
                   frozenset(optional))


def ask(fleet: ReplayFleet, record: PlanRecord, transports: Fleet, secrets: Any = None,
        optional: tuple[str, ...] = (), hub: Any = HUB, bus: EventBus | None = None) -> FirstAnswer:
    values = secrets if secrets is not None else {n: fleet.secrets[n] for n in record.vault.paths}

    async def go() -> FirstAnswer:
        async with session(record, transports, optional) as s:
            return await first_question(record, s, bus or EventBus(), reader=lambda _v: values, hub=hub)

    return asyncio.run(go())


def test_a_full_run_leaves_a_record_of_exactly_what_it_asked(recorded) -> None:
    fleet, record, cache = recorded
    assert set(record.nodes) == {"oracle", "starlord", "thanos"}
    look = fleet.transports["oracle"].round_trips[0][0]
    for line in record.nodes["oracle"].expected:
        assert repr(line) in look or line in look
    assert "qdrant" not in record.nodes["starlord"].services      # protected: the full plan decides
    assert record.secrets == secrets_digest({n: fleet.secrets[n] for n in record.vault.paths})
    text = cache.path(KEY).read_text()
    assert not any(v.reveal() in text for v in fleet.secrets.values() if len(v.reveal()) > 3)  # no secret values
    assert oct(cache.path(KEY).stat().st_mode & 0o777) == "0o600"


def test_the_next_run_costs_one_command_per_node(recorded) -> None:
    fleet, record, _ = recorded
    answer = ask(fleet, record, replay_again(fleet))
    assert answer.noop, answer.why
    for name in ("oracle", "starlord", "thanos"):
        trips = fleet.transports[name].round_trips
        assert len(trips) == 1 and trips[0][0].startswith("look-lock ")


def test_a_node_that_differs_keeps_its_lock_and_connection_for_the_plan(recorded) -> None:
    fleet, record, _ = recorded
    transports = replay_again(fleet, thanos=NodeCase(changed=["sillytavern"]))

    async def go() -> tuple[FirstAnswer, set[str], str]:
        s = session(record, transports)
        answer = await first_question(record, s, EventBus(), reader=lambda _v: fleet.secrets, hub=HUB)
        held = set(s.locked)
        await s.close()  # the plan never started (bad input, say): the session lets the lock go
        return answer, held, s.ctx.run_id

    answer, held, run_id = asyncio.run(go())
    assert not answer.noop and "thanos" in answer.why and held == {"thanos"}
    assert fleet.transports["thanos"].round_trips[-1] == [f"unlock-if-mine /opt/ai-swarm {run_id}"]
    assert all(len(fleet.transports[n].round_trips) == 1 for n in ("oracle", "starlord"))  # nothing to release


def test_a_weights_branch_that_moved_is_not_a_noop_and_an_unreachable_hub_gives_no_verdict(recorded) -> None:
    """The record keeps the commit each moving revision (`main`) named; the next run asks the hub
    again (stdlib, beside the looks): another commit sends it to the full plan, no answer does not."""
    fleet, record, _ = recorded
    assert record.weights == {f"{p.repo}@main": COMMIT for p in fleet.revisions.commits} and record.weights
    key = sorted(record.weights)[0]
    moved = ask(fleet, record, replay_again(fleet), hub=lambda r: {**r.weights, key: MOVED})
    assert not moved.noop and f"{key} names another commit" in moved.why
    bus, said = EventBus(), []
    bus.subscribe(lambda e: said.append(e.message))
    silent = ask(fleet, record, replay_again(fleet), hub=lambda r: dict.fromkeys(r.weights), bus=bus)
    assert silent.noop, silent.why
    assert sum("the hub did not say" in m and key in m for m in said) == 1, said  # said once, as the plan does


def test_a_stopped_container_is_not_a_noop(recorded) -> None:
    fleet, record, _ = recorded
    answer = ask(fleet, record, replay_again(fleet, starlord=NodeCase(stopped=["gpu-monitor"])))
    assert not answer.noop and "gpu-monitor not running" in answer.why


def test_a_rotated_secret_is_not_a_noop(recorded) -> None:
    fleet, record, _ = recorded
    rotated = {n: fleet.secrets[n] for n in record.vault.paths}
    rotated["grafana_admin_password"] = Secret("rotated-value-1", "grafana_admin_password")
    answer = ask(fleet, record, replay_again(fleet), secrets=rotated)
    assert not answer.noop and "secrets" in answer.why
    assert all(not t.round_trips for t in fleet.transports.values())  # not even a look


def test_the_plan_goes_on_over_the_same_session(recorded, tmp_path) -> None:
    """thanos differs: the runbook reuses the first question's connections, lock and secrets."""
    fleet, record, _ = recorded
    transports = replay_again(fleet, thanos=NodeCase(changed=["sillytavern"]))

    async def go() -> Any:
        async with session(record, transports) as s:
            first = await first_question(record, s, EventBus(), reader=lambda _v: fleet.secrets, hub=HUB)
            assert not first.noop
            return await fleet.deploying(phases="2-4", state_dir=tmp_path, session=s, first=first)

    result = asyncio.run(go())
    assert result.changed == {4: ["thanos"]}
    trips = fleet.transports["thanos"].round_trips
    assert trips[0][0].startswith("look-lock ") and trips[1][0].startswith("look-lock ")
    assert any(t[-1].startswith("docker compose") and t[-1].endswith("-- sillytavern") for t in trips)
    assert all(len(fleet.transports[n].round_trips) == 2 for n in ("oracle", "starlord"))
    assert all(t.stats.connections <= 1 for t in fleet.transports.values())


def test_an_optional_node_that_is_off_is_skipped_not_a_reason_to_replan(recorded) -> None:
    """The overflow host is off (optional): the others unchanged is a no-op, as the full plan
    would conclude, instead of planning everything anew on every run."""
    fleet, record, _ = recorded
    answer = ask(fleet, record, replay_again(fleet, thanos=NodeCase(dead=True)), optional=("thanos",))
    assert answer.noop, answer.why
    assert answer.result is not None and set(answer.result.skipped) == {"thanos"}
    assert answer.result.unchanged == ["oracle", "starlord"]


def test_a_required_node_that_is_off_is_left_to_the_plan(recorded) -> None:
    fleet, record, _ = recorded
    answer = ask(fleet, record, replay_again(fleet, thanos=NodeCase(dead=True)))
    assert not answer.noop and "did not answer" in answer.why


class Gated:
    """A replayed node whose connect or commands wait until the test opens a gate."""

    def __init__(self, inner: Any, connect: asyncio.Event | None = None, run: asyncio.Event | None = None) -> None:
        self.inner, self.connect_gate, self.run_gate = inner, connect, run

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def connect(self) -> None:
        if self.connect_gate is not None:
            await self.connect_gate.wait()
        await self.inner.connect()

    async def run(self, command: Any, **kwargs: Any) -> Any:
        if self.run_gate is not None:
            await self.run_gate.wait()
        return await self.inner.run(command, **kwargs)


def test_an_interrupted_first_question_leaves_no_look_running(recorded) -> None:
    """Interrupted (SIGTERM: the run is cancelled) while thanos has not answered yet, no look —
    which may take a node's lock — goes on behind the session's back."""
    fleet, record, _ = recorded
    replayed = replay_again(fleet)

    async def go() -> None:
        never, slow = asyncio.Event(), asyncio.Event()
        transports = Fleet([Gated(replayed["oracle"], run=slow), replayed["starlord"],
                            Gated(replayed["thanos"], connect=never)])
        s = session(record, transports)
        asking = asyncio.ensure_future(first_question(record, s, EventBus(), reader=lambda _v: fleet.secrets, hub=HUB))
        # starlord looks (once the secrets, read on a thread, are in); oracle's look waits on its
        # command; thanos on its connect
        deadline = time.monotonic() + 5
        while not fleet.transports["starlord"].round_trips and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert fleet.transports["starlord"].round_trips and not fleet.transports["oracle"].round_trips
        asking.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asking
        slow.set()
        for _ in range(50):
            await asyncio.sleep(0)

    asyncio.run(go())
    assert fleet.transports["oracle"].round_trips == []


# ------------------------------------------------------------------ trusting a record


def test_a_record_anyone_else_could_have_written_is_never_used(recorded) -> None:
    """A record decides where the Vault token goes: one the group or others may write, one
    owned by someone else, or one in a directory others may write, is not loaded."""
    _, _, cache = recorded
    path = cache.path(KEY)
    path.chmod(0o666)
    assert cache.load(KEY, INVENTORY) is None
    path.chmod(0o600)
    assert cache.load(KEY, INVENTORY) is not None
    os.chown(path, 65534, 65534)
    assert cache.load(KEY, INVENTORY) is None
    os.chown(path, os.geteuid(), os.getegid())
    cache.directory.chmod(0o777)
    assert cache.load(KEY, INVENTORY) is None
    cache.directory.chmod(0o700)
    assert cache.load(KEY, INVENTORY) is not None


@pytest.mark.parametrize("service", ["vault", "consul"])
def test_a_record_naming_another_vault_or_consul_than_the_inventory_is_never_used(recorded, service) -> None:
    _, _, cache = recorded
    path = cache.path(KEY)
    data = json.loads(path.read_text())
    data["consul"] = {"addr": "http://100.96.197.84:8500", "expected": {"x": {}}}  # as the inventory says
    path.write_text(json.dumps(data))
    assert cache.load(KEY, INVENTORY) is not None
    data[service]["addr"] = "http://198.18.0.250:8200"
    path.write_text(json.dumps(data))
    assert cache.load(KEY, INVENTORY) is None


# ------------------------------------------------------------------ the key


def test_the_key_changes_with_every_input(tmp_path: Path) -> None:
    for part in ("inventory", "playbooks", "roles"):
        shutil.copytree(REPO / part, tmp_path / part)
    inv, book = tmp_path / "inventory/swarm.yml", tmp_path / "playbooks/ai-swarm.yml"
    base = inputs_digest(tmp_path, inv, book, ["deploy", "2-4"])
    assert inputs_digest(tmp_path, inv, book, ["deploy", "2-4"]) == base
    assert inputs_digest(tmp_path, inv, book, ["deploy", "3"]) != base
    template = tmp_path / "roles/haproxy/haproxy.cfg.j2"
    template.write_text(template.read_text() + "\n# edited\n")
    assert inputs_digest(tmp_path, inv, book, ["deploy", "2-4"]) != base


def test_the_key_changes_with_a_shared_role_an_example_project_uses(tmp_path: Path, monkeypatch) -> None:
    """A project without its own haproxy role uses swarm's: editing that one must not leave
    the no-op record standing."""
    from orchestrator.engine import record

    swarm_copy = tmp_path / "swarm"
    (swarm_copy / "orchestrator").mkdir(parents=True)
    shutil.copytree(REPO / "roles", swarm_copy / "roles")
    monkeypatch.setattr(record, "PACKAGE", swarm_copy / "orchestrator")
    project = tmp_path / "gateway"
    shutil.copytree(REPO / "examples" / "gateway", project)
    inv, book = project / "inventory/swarm.yml", project / "playbooks/gateway.yml"
    base = inputs_digest(project, inv, book, ["deploy"])
    shared = swarm_copy / "roles/haproxy/haproxy.cfg.j2"
    shared.write_text(shared.read_text() + "\n# edited\n")
    assert inputs_digest(project, inv, book, ["deploy"]) != base


def test_the_record_paths_defaults_are_the_loaders() -> None:
    """Where the record check assumes Vault and Consul when an inventory names neither."""
    from orchestrator.config.inventory import ConsulSettings, VaultSettings
    from orchestrator.engine import record

    assert VaultSettings().addr == record.DEFAULT_VAULT
    assert ConsulSettings().addr == record.DEFAULT_CONSUL


def test_a_record_keeps_an_optional_node_that_was_off(tmp_path) -> None:
    """overflow (optional) is off during the full run: it is skipped, and the record still names
    it — the next run asks it again, and deploys it once it is on."""
    fleet = ReplayFleet()
    cache = PlanCache(tmp_path / "plans")
    result = fleet.deploy(state_dir=tmp_path, plan_cache=cache, plan_key=KEY,
                          nodes={"overflow": NodeCase(dead=True)})
    assert set(result.skipped) == {"overflow"} and result.changed == {}
    record = cache.load(KEY, INVENTORY)
    assert record is not None and record.nodes["overflow"].optional
    assert record.nodes["overflow"].target["answer_window"] == 0.2
    assert "backup-router" in record.nodes["overflow"].services
    assert not record.nodes["oracle"].optional


def test_the_record_check_reads_the_inventorys_addresses_as_the_loader_does() -> None:
    """Without a YAML library (a no-op deploy never imports one): every inventory swarm writes or
    ships reads the same; any form it cannot read exactly trusts no record."""
    from orchestrator.config.inventory import load_inventory
    from orchestrator.engine.record import declared_addresses

    for path in [INVENTORY, *sorted((REPO / "examples").glob("*/inventory/swarm.yml"))]:
        spec = load_inventory(path).spec
        assert declared_addresses(path.read_text()) == {"vault": spec.vault.addr, "consul": spec.consul.addr}
    assert declared_addresses("nodes: {}\n") == {}  # neither named: the loader's defaults
    for odd in ("vault: {addr: http://a:8200}\n",                    # flow style
                "vault: &v\n  addr: http://a:8200\n",                # an anchor
                "vault:\n  <<: *v\n",                                # a merge
                "vault:\n  addr: !!str http://a:8200\n",             # a tag
                "vault:\n    addr: http://a:8200\n",                 # another indent
                "vault:\n\taddr: http://a:8200\n",                   # a tab
                "vault:\n  addr: http://a:8200\nvault:\n  addr: http://b:8200\n"):  # twice
        assert declared_addresses(odd) is None, odd
