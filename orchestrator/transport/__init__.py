"""How swarm reaches nodes: a narrow `Transport` protocol and its implementations.

`base` holds the protocol, `Result` and per-connection counters; `ssh` the asyncssh
transport and host-key trust; `dial` an optional node's TCP connect within its window;
`fleet` the run's connections (parallel, kept, closed); `recording` the `--check` wrapper;
`local` a subprocess transport for tests.

Import from the module that holds a name: this package imports nothing, so a module that
needs only `base` (engine/context.py) does not load asyncssh (~0.1 s, python -X importtime,
2026-12-06) before a deploy has dialled its optional nodes (transport/dial.py).
"""
