"""A node's or service's address as a URL or a `host:port` writes it.

An IPv6 address holds colons, so in a URL or before `:port` it stands in brackets
(RFC 3986: `http://[fd00::5]:8000/health`, `[fd00::5]:22`); an IPv4 address or a host name
stands as it is. Every URL and `host:port` built from an address goes through here: the
Python code that probes, checks and prints, and the role templates' `urlhost` and `hostport`
filters (render/templates.py). No dependency beyond the standard library, so the SSH
transport and the CLI's fast paths can use it.
"""

from __future__ import annotations


def url_host(host: str) -> str:
    """A host as it stands in a URL or a `host:port`: an IPv6 address in brackets (RFC 3986)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def host_port(host: str, port: int | str) -> str:
    return f"{url_host(host)}:{port}"


def http_url(host: str, port: int | str, path: str = "", scheme: str = "http") -> str:
    """`scheme://host:port/path` for a node or service address."""
    return f"{scheme}://{host_port(host, port)}{path}"
