"""Real Python programs from PyPI in lab images (LiteLLM's proxy), packed like Debian binaries.

`pip install --target` puts a distribution and all its dependencies into a directory under
the lab's cache (`<lab>/cache/pypi/<name>-<key>/`), resolved for the image's interpreter —
Debian's python3.11, which the `python` layer packs — not the one running swarm: CPython
3.11 wheels for manylinux x86_64 only, every version pinned (the set the upstream image of
that release shipped with, as near as PyPI still has it), so a cold build installs the same
bytes every time and a warm one installs nothing. The directory becomes one layer at
/usr/local/lib/python3.11/dist-packages, plus the shared libraries its extension modules
need beyond the manylinux set (`ldd`), and the program's own wrapper in /usr/local/bin.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import RuntimeFailure
from orchestrator.lab import oci, rootfs
from orchestrator.lab.oci import Entry

log = logging.getLogger(__name__)

SITE_PACKAGES = "/usr/local/lib/python3.11/dist-packages"
_PLATFORMS = ("manylinux_2_34", "manylinux_2_28", "manylinux_2_27", "manylinux_2_24",
              "manylinux_2_17", "manylinux2014", "manylinux_2_12", "manylinux2010",
              "manylinux_2_5", "manylinux1", "linux")
_COMPLETE = ".swarm-complete"
LAYOUT = "v1"  # bump when layer_entries changes what it packs


@dataclass(frozen=True)
class Distribution:
    """What to install: requirements, the pins for every dependency, the program wrapper."""

    name: str
    requirements: tuple[str, ...]
    pins: tuple[str, ...]
    program: str
    wrapper: str

    def key(self, python_version: str) -> str:
        text = "\n".join((*self.requirements, *sorted(self.pins), self.wrapper, python_version,
                          *_PLATFORMS))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# LiteLLM 1.55.8, the version roles/litellm pins (ghcr.io/berriai/litellm:main-v1.55.8).
# `prometheus-client` is in the upstream image (its `callbacks: [prometheus]` /metrics);
# `async-timeout` is what redis asks for on Python < 3.11.3 — Debian's 3.11.2 — which pip
# would skip because it evaluates markers with the interpreter running pip.
LITELLM = Distribution(
    name="litellm",
    requirements=("litellm[proxy]==1.55.8", "prometheus-client", "async-timeout"),
    pins=(
        "aiohappyeyeballs==2.4.4", "aiohttp==3.11.10", "aiosignal==1.3.2",
        "annotated-types==0.7.0", "anyio==4.7.0", "apscheduler==3.11.0",
        "async-timeout==5.0.1", "attrs==24.3.0", "backoff==2.2.1", "certifi==2024.12.14",
        "cffi==1.17.1", "charset-normalizer==3.4.0", "click==8.1.7", "cryptography==42.0.8",
        "distro==1.9.0", "dnspython==2.7.0", "email-validator==2.2.0", "fastapi==0.111.1",
        "fastapi-cli==0.0.7", "fastapi-sso==0.10.0", "filelock==3.16.1",
        "frozenlist==1.5.0", "fsspec==2024.10.0", "gunicorn==22.0.0", "h11==0.14.0",
        "httpcore==1.0.7", "httptools==0.6.4", "httpx==0.27.2", "huggingface-hub==0.26.5",
        "idna==3.10", "importlib-metadata==8.5.0", "jinja2==3.1.4", "jiter==0.8.2",
        "jsonschema==4.23.0", "jsonschema-specifications==2024.10.1", "markdown-it-py==3.0.0",
        "markupsafe==3.0.2", "mdurl==0.1.2", "multidict==6.1.0", "oauthlib==3.2.2",
        "openai==1.58.1", "orjson==3.10.12", "packaging==24.2", "prometheus-client==0.20.0",
        "propcache==0.2.1", "pycparser==2.22", "pydantic==2.10.3", "pydantic-core==2.27.1",
        "pygments==2.18.0", "pyjwt==2.10.1", "pynacl==1.5.0", "python-dateutil==2.9.0.post0",
        "python-dotenv==1.0.1", "python-multipart==0.0.9", "pyyaml==6.0.2", "redis==5.2.1",
        "referencing==0.35.1", "regex==2024.11.6", "requests==2.32.3", "rich==13.9.4",
        "rich-toolkit==0.12.0", "rpds-py==0.22.3", "rq==2.0.0", "shellingham==1.5.4",
        "six==1.17.0", "sniffio==1.3.1", "starlette==0.37.2", "tiktoken==0.8.0",
        "tokenizers==0.21.0", "tqdm==4.67.1", "typer==0.15.1", "typing-extensions==4.12.2",
        "tzdata==2024.2", "tzlocal==5.2", "ujson==5.10.0", "urllib3==2.2.3",
        "uvicorn==0.22.0", "uvloop==0.21.0", "watchfiles==1.0.3", "websockets==14.1",
        "yarl==1.18.3", "zipp==3.21.0",
    ),
    program="litellm",
    wrapper='#!/bin/sh\n# the `litellm` console script of the PyPI package\n'
            'exec python3 -c \'import sys; from litellm import run_server; '
            'sys.argv[0] = "litellm"; sys.exit(run_server())\' "$@"\n',
)


def image_python_version() -> str:
    """The version of the interpreter the `python` layer packs (Debian's python3.11)."""
    result = subprocess.run([str(rootfs.PYTHON), "-c",
                             "import platform; print(platform.python_version())"],
                            capture_output=True, text=True, check=False)
    return result.stdout.strip() or "3.11"


def pip_argv(dist: Distribution, target: Path, constraints: Path, python_version: str) -> list[str]:
    argv = [sys.executable, "-m", "pip", "install", "--quiet", "--no-input",
            "--disable-pip-version-check", "--no-warn-conflicts", "--target", str(target),
            "--only-binary=:all:", "--python-version", python_version, "--implementation", "cp",
            "--abi", "cp311", "--abi", "abi3", "--abi", "none", "-c", str(constraints)]
    for tag in _PLATFORMS:
        argv += ["--platform", f"{tag}_x86_64"]
    return argv + list(dist.requirements)


def ensure_installed(dist: Distribution, cache_root: Path,
                     say: Callable[[str], None]) -> Path:
    """The cached install directory of `dist`, installing it with pip the first time."""
    version = image_python_version()
    site = cache_root / "pypi" / f"{dist.name}-{dist.key(version)}"
    if (site / _COMPLETE).exists():
        return site
    tmp = site.with_name(site.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    constraints = tmp.with_name(site.name + ".constraints.txt")
    constraints.write_text("\n".join(dist.pins) + "\n")
    say(f"installing {' '.join(dist.requirements)} from PyPI for the lab image (once)")
    started = time.monotonic()
    result = subprocess.run(pip_argv(dist, tmp, constraints, version), capture_output=True,
                            text=True, check=False, timeout=1200)
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        raise RuntimeFailure(f"lab image {dist.name}: pip install failed (exit "
                             f"{result.returncode}): {tail}",
                             hint="PyPI must be reachable for the first `lab up`")
    (tmp / _COMPLETE).write_text(f"{time.monotonic() - started:.1f}s\n")
    shutil.rmtree(site, ignore_errors=True)
    tmp.rename(site)
    return site


def _site_files(site: Path) -> list[Path]:
    """Everything pip put in the target, except console scripts (their shebang is the host's)."""
    return sorted(p for p in site.rglob("*")
                  if (p.is_file() or p.is_symlink()) and p.relative_to(site).parts[0] != "bin"
                  and p.name != _COMPLETE and p.exists())


def layer_entries(dist: Distribution, site: Path) -> list[Entry]:
    """The install directory under SITE_PACKAGES, extension modules' libraries, the wrapper."""
    files = _site_files(site)
    entries: dict[str, Entry] = {}
    for path in files:
        target = f"{SITE_PACKAGES}/{path.relative_to(site).as_posix()}"
        entries[target] = oci.host_file(target, path)
    for module in (p for p in files if p.suffix == ".so" or ".so." in p.name):
        for lib in rootfs.ldd_paths(module):
            if not str(lib).startswith(str(site)):
                entries.setdefault(str(lib), oci.host_file(str(lib), lib, 0o755))
    wrapper = f"/usr/local/bin/{dist.program}"
    entries[wrapper] = oci.script_entry(wrapper, dist.wrapper)
    return list(entries.values())
