"""How swarm reaches nodes: a narrow `Transport` protocol and its implementations.

`base` holds the protocol, `Result` and per-connection counters; `ssh` the asyncssh
transport, host-key trust and the parallel `Fleet`; `recording` the `--check` wrapper;
`local` a subprocess transport for tests.
"""
