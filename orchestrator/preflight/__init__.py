"""Preflight: prove a phase can succeed before it starts (issue 5)."""
