"""nvidia_gpu_exporter stand-in: Prometheus metrics for one idle GPU on :9835/metrics.

Accepts `--web.listen-address=:9835` as the real exporter; GPU facts come from env
`SWARM_GPU_NAME`, `SWARM_GPU_MEMORY_MIB`, `SWARM_GPU_TEMPERATURE_C` (lab defaults).
"""

from __future__ import annotations

import argparse
import os

try:
    from . import _base
except ImportError:  # run as a script inside a lab image
    import _base  # type: ignore[no-redef]


def metrics_text() -> str:
    name = os.environ.get("SWARM_GPU_NAME", "NVIDIA GeForce RTX 4090")
    total = float(os.environ.get("SWARM_GPU_MEMORY_MIB", "24564")) * 1024 * 1024
    temp = float(os.environ.get("SWARM_GPU_TEMPERATURE_C", "45"))
    labels = f'uuid="GPU-00000000-lab",name="{name}"'
    return "\n".join(
        [
            "# TYPE nvidia_smi_temperature_gpu gauge",
            f"nvidia_smi_temperature_gpu{{{labels}}} {temp}",
            "# TYPE nvidia_smi_memory_total_bytes gauge",
            f"nvidia_smi_memory_total_bytes{{{labels}}} {total:.0f}",
            "# TYPE nvidia_smi_memory_used_bytes gauge",
            f"nvidia_smi_memory_used_bytes{{{labels}}} 0",
            "# TYPE nvidia_smi_utilization_gpu_ratio gauge",
            f"nvidia_smi_utilization_gpu_ratio{{{labels}}} 0",
            "",
        ]
    )


class ExporterHandler(_base.Handler):
    name = "gpu-exporter-standin"

    def route(self, method: str, path: str) -> None:
        if path == "/metrics":
            if not self.mode.is_healthy:
                return self.send_text(503, "collector failed")
            return self.send_text(200, metrics_text(), "text/plain; version=0.0.4")
        self.send_text(200, "<html><body>nvidia_gpu_exporter (lab)</body></html>", "text/html")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu-exporter-standin", add_help=False)
    parser.add_argument("--web.listen-address", dest="listen", default=":9835")
    args, _unknown = parser.parse_known_args(argv)
    _base.serve(ExporterHandler, "0.0.0.0", _base.port_from_listen_address(args.listen, 9835))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
