"""Backups that are proven by a restore (docs/backup.md).

Which services hold state, and how each is backed up, is declared by its role (`backup:`
in role.yml, `config/roles.py`); `plan.py` renders those declarations per service into
`Target`s (data: method, parameters, retention, where a copy goes), checked before
anything connects. `run.py` takes the backups over one `Fleet` (one node's services one
after the other, nodes in parallel), `restore.py` puts one back — under the node's deploy
lock, stopping what depends on the service and re-gating it all. The node-side scripts
are `orchestrator/commands/backup.py`; Qdrant's snapshot API is spoken from here
(`qdrant.py`). `metrics.py` writes the Prometheus textfile gauges the stale-backup alert
reads.
"""
