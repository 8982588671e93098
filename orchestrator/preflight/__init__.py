"""Preflight: prove a phase can succeed before it starts (issue 5).

`facts` builds the ONE read-only command each node runs and parses its answer; `checks`
turns facts, registry, Vault and HTTP answers into pass/warn/fail results (pure); `scope`
says which nodes, services and cross-node links a run covers; `run` gathers everything
concurrently (`preflight`, and `gate_phase` for the deploy over its open connections);
`report` renders text/JSON/JUnit/Prometheus; `schedule` and `cli` run it on a timer.
"""
