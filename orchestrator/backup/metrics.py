"""Prometheus textfile gauges of the backups, for the node exporter's textfile collector.

One series per stateful service (labels `service`, `node`, `method`), read from what the
nodes hold after the run (their newest manifest), so a failed run never hides the age of
the last good backup:

    swarm_backup_last_success_timestamp_seconds   the newest backup's time (0: none yet)
    swarm_backup_size_bytes                       its size
    swarm_backup_duration_seconds                 how long it took
    swarm_backups_kept                            how many the node keeps
    swarm_backup_max_age_seconds                  the role's backup_max_age: older is stale
    swarm_backup_last_run_success                 1 when this run backed it up, else 0

The fleet's Prometheus alerts `BackupStale` when `time() - last_success > max_age`, and
`BackupFailing` when the last run failed (roles/prometheus/alerts.yml.j2).
"""

from __future__ import annotations

from orchestrator.backup.run import BackupReport
from orchestrator.render.backups import Target

GAUGES = (
    ("swarm_backup_last_success_timestamp_seconds", "Unix time of the newest backup of a service (0: none)."),
    ("swarm_backup_size_bytes", "Size of the newest backup of a service."),
    ("swarm_backup_duration_seconds", "How long the newest backup of a service took."),
    ("swarm_backups_kept", "Backups of a service its node keeps."),
    ("swarm_backup_max_age_seconds", "A newest backup older than this is stale (backup_max_age)."),
    ("swarm_backup_last_run_success", "1 when the last swarm backup run backed the service up, else 0."),
)


def _labels(target: Target) -> str:
    return f'{{service="{target.service}",node="{target.node}",method="{target.method}"}}'


def _values(report: BackupReport, target: Target, ok: bool) -> dict[str, float] | None:
    listing = report.listings.get(target.node)
    values: dict[str, float] = {"swarm_backup_max_age_seconds": target.max_age,
                                "swarm_backup_last_run_success": 1.0 if ok else 0.0}
    if listing is None:  # the node did not answer: only what this run knows
        return values
    newest = listing.newest(target.service)
    manifest = newest.manifest if newest is not None else None
    values.update({
        "swarm_backup_last_success_timestamp_seconds": newest.created if newest is not None else 0.0,
        "swarm_backup_size_bytes": float(manifest.size) if manifest is not None else 0.0,
        "swarm_backup_duration_seconds": manifest.duration_s if manifest is not None else 0.0,
        "swarm_backups_kept": float(len(listing.of(target.service))),
    })
    return values


def render(report: BackupReport) -> str:
    rows = [(o.target, _values(report, o.target, o.ok)) for o in report.outcomes]
    lines: list[str] = []
    for name, help_text in GAUGES:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        for target, values in rows:
            if values is not None and name in values:
                lines.append(f"{name}{_labels(target)} {_number(values[name])}")
    lines += ["# HELP swarm_backup_last_run_timestamp_seconds Unix time the last swarm backup run ended.",
              "# TYPE swarm_backup_last_run_timestamp_seconds gauge",
              f"swarm_backup_last_run_timestamp_seconds {report.finished_at:.3f}"]
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:.3f}"
