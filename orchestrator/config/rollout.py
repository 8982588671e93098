"""How a changed service is put in place: a role's `rollout:` block (role.yml), per instance.

* `strategy` — `recreate` (compose recreates the container: what every role does unless it
  says otherwise) or `rolling` (a model server behind the front door: drained in HAProxy,
  swapped, gated, put back, one instance of a model at a time; engine/rollout.py). A role
  usually writes `"{{ rollout }}"` and declares `rollout` as a setting, so the inventory can
  choose per instance (`nodes.<node>.services.<svc>.rollout: recreate`).
* `drain_timeout` — how long a rolling swap waits for the instance's requests in flight to
  finish before it stops it anyway (and says so).
* `stop_grace` — how long the container is given to exit after SIGTERM before it is killed
  (compose's `stop_grace_period`).
* `reload` — a release that changes only this service's config files (its compose
  definition and env file are the same) signals the running container instead of
  recreating it: `signal` is what the main process reloads on (HAProxy's master: SIGUSR2;
  Prometheus: SIGHUP), `confirm` how swarm knows the new config is in effect (`runtime-api`:
  HAProxy's worker changed, read over its stats socket; `none`: the gate alone).

Values may be templates; they are checked once rendered (`resolve`), and a bad one is an
input error naming the role file and key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from orchestrator.config.models import Model, parse_duration
from orchestrator.errors import InputError

STRATEGIES = ("recreate", "rolling")
Templated = int | float | str


class ReloadSpec(Model):
    signal: Literal["SIGHUP", "SIGUSR2"]
    confirm: Literal["runtime-api", "none"] = "none"


class RuntimeApiSpec(Model):
    """A control socket the service opens in its run directory (the node's
    `<deploy_root>/run/<service>`, mounted where the role says: `{{ run_dir }}`)."""

    socket: str = Field("admin.sock", pattern=r"[A-Za-z0-9_.-]{1,64}")
    state_file: str | None = Field(None, pattern=r"[A-Za-z0-9_.-]{1,64}")


class RolloutSpec(Model):
    strategy: Templated = "recreate"
    drain_timeout: Templated = "120s"
    stop_grace: Templated | None = None
    reload: ReloadSpec | None = None
    runtime_api: RuntimeApiSpec | None = None


@dataclass(frozen=True)
class Rollout:
    """One instance's rollout, rendered."""

    strategy: str = "recreate"
    drain_timeout: float = 120.0
    stop_grace: float | None = None
    reload_signal: str | None = None
    reload_confirm: str = "none"
    run_dir: str | None = None           # on the node, when the role has a runtime API
    socket: str | None = None            # that API's socket, on the node
    state_file: str | None = None        # where the service reads its saved state at (re)start

    @property
    def rolling(self) -> bool:
        return self.strategy == "rolling"

    @property
    def reloads(self) -> bool:
        return self.reload_signal is not None


def resolve(spec: RolloutSpec, render: Any, where: str, run_dir: str) -> Rollout:
    """The block with its templates rendered (`render(value, key) -> value`) and checked."""
    api = spec.runtime_api
    strategy = str(render(spec.strategy, "strategy")).strip()
    if strategy not in STRATEGIES:
        raise InputError(f"rollout.strategy: expected one of {', '.join(STRATEGIES)}, got {strategy!r}",
                         file=where)
    return Rollout(strategy=strategy, drain_timeout=_seconds(render(spec.drain_timeout, "drain_timeout"),
                                                              "drain_timeout", where),
                   stop_grace=(None if spec.stop_grace is None else
                               _seconds(render(spec.stop_grace, "stop_grace"), "stop_grace", where)),
                   reload_signal=spec.reload.signal if spec.reload else None,
                   reload_confirm=spec.reload.confirm if spec.reload else "none",
                   run_dir=run_dir if api else None, socket=f"{run_dir}/{api.socket}" if api else None,
                   state_file=f"{run_dir}/{api.state_file}" if api and api.state_file else None)


def _seconds(value: Any, key: str, where: str) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise InputError(f"rollout.{key}: {exc}", file=where) from None
    if seconds <= 0:
        raise InputError(f"rollout.{key}: must be more than 0s, got {value!r}", file=where)
    return seconds
