"""Generic HTTP stand-in for web apps the lab cannot run (Open WebUI, Grafana, Prometheus...).

Configured by env (lab images set defaults; compose may override):
`SWARM_STANDIN_PORT` (default 8080; also `PORT`, `--port N`, `--web.listen-address=:N`),
`SWARM_STANDIN_HEALTH_PATHS` (comma list, default `/health`): those paths answer 200 with
a small JSON body while healthy and 503 otherwise; every other path answers 200 with a
page naming `SWARM_STANDIN_NAME`. Fault modes: see `_base.py`.
"""

from __future__ import annotations

import argparse
import os

try:
    from . import _base
except ImportError:  # run as a script inside a lab image
    import _base  # type: ignore[no-redef]


def listen_port(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="generic-standin", add_help=False)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--web.listen-address", dest="listen", default=None)
    args, _unknown = parser.parse_known_args(argv)
    default = int(os.environ.get("SWARM_STANDIN_PORT") or os.environ.get("PORT") or 8080)
    if args.port:
        return int(args.port)
    if args.listen:
        return _base.port_from_listen_address(args.listen, default)
    return default


def health_paths() -> frozenset[str]:
    raw = os.environ.get("SWARM_STANDIN_HEALTH_PATHS", "/health")
    return frozenset(p.strip() for p in raw.split(",") if p.strip())


def make_handler(name: str, version: str, paths: frozenset[str]) -> type[_base.Handler]:
    class GenericHandler(_base.Handler):
        def route(self, method: str, path: str) -> None:
            if path in paths:
                if self.mode.is_healthy:
                    return self.send_json(
                        200, {"status": "ok", "database": "ok", "version": version, "app": name}
                    )
                return self.send_json(503, {"status": "unavailable", "app": name})
            if method == "POST":
                self.read_body()
            self.send_text(
                200, f"<html><body>{name} (swarm lab stand-in)</body></html>", "text/html"
            )

    GenericHandler.name = f"{name}-standin"
    return GenericHandler


def main(argv: list[str] | None = None) -> int:
    name = os.environ.get("SWARM_STANDIN_NAME", "app")
    version = os.environ.get("SWARM_STANDIN_VERSION", "0.0.0")
    handler = make_handler(name, version, health_paths())
    _base.serve(handler, os.environ.get("SWARM_STANDIN_HOST", "0.0.0.0"), listen_port(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
