"""Readers of node facts: each a command plus a parser (containers, GPUs, node state)."""
