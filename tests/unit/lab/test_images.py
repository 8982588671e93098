"""The lab images of real programs: LiteLLM from PyPI, PostgreSQL and Prometheus from Debian."""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from orchestrator.lab import images, oci, pypi, rootfs

REPO = Path(__file__).resolve().parents[3]


def _spec(ref: str) -> images.ImageSpec:
    return next(s for s in images.catalog() if s.ref == ref)


def test_litellm_is_installed_at_the_version_the_role_pins() -> None:
    role = yaml.safe_load((REPO / "roles/litellm/role.yml").read_text())
    tag = role["image"]["name"].rsplit(":", 1)[1]  # main-v1.55.8
    assert f"litellm[proxy]=={tag.removeprefix('main-v')}" in pypi.LITELLM.requirements
    spec = _spec(role["image"]["name"])
    assert spec.layers == ("base", "python", "litellm")
    assert "LITELLM_LOCAL_MODEL_COST_MAP=True" in spec.runtime.env  # offline: no cost-map fetch
    assert not any(e.startswith("SWARM_STANDIN") for e in spec.runtime.env)  # not a stand-in


def test_every_dependency_is_pinned_once() -> None:
    names = [p.split("==")[0] for p in pypi.LITELLM.pins]
    assert all("==" in p for p in pypi.LITELLM.pins)
    assert len(names) == len(set(names))


def test_pip_resolves_for_the_image_interpreter_not_swarms(tmp_path: Path) -> None:
    argv = pypi.pip_argv(pypi.LITELLM, tmp_path / "site", tmp_path / "c.txt", "3.11.2")
    assert argv[argv.index("--python-version") + 1] == "3.11.2"
    assert "--only-binary=:all:" in argv and argv[argv.index("--target") + 1] == str(tmp_path / "site")
    assert {"cp311", "abi3", "none"} == {argv[i + 1] for i, a in enumerate(argv) if a == "--abi"}
    assert "manylinux2014_x86_64" in argv and argv[argv.index("-c") + 1] == str(tmp_path / "c.txt")
    assert pypi.LITELLM.key("3.11.2") != pypi.LITELLM.key("3.11.9")


def test_a_complete_install_is_reused_without_pip(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "pypi" / f"litellm-{pypi.LITELLM.key('3.11.2')}"
    site.mkdir(parents=True)
    (site / ".swarm-complete").write_text("1s\n")

    def no_pip(*_args: object, **_kw: object) -> None:
        raise AssertionError("pip ran although the install is cached")

    monkeypatch.setattr(pypi, "image_python_version", lambda: "3.11.2")
    monkeypatch.setattr(pypi.subprocess, "run", no_pip)
    said: list[str] = []
    assert pypi.ensure_installed(pypi.LITELLM, tmp_path, said.append) == site
    assert said == []


def test_layer_puts_the_install_in_dist_packages_without_host_scripts(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "litellm").mkdir(parents=True)
    (site / "litellm" / "__init__.py").write_text("x = 1\n")
    (site / "bin").mkdir()
    (site / "bin" / "litellm").write_text("#!/root/.pyenv/versions/3.11.7/bin/python\n")
    (site / ".swarm-complete").write_text("1s\n")
    paths = {e.path: e for e in pypi.layer_entries(pypi.LITELLM, site)}
    assert f"{pypi.SITE_PACKAGES}/litellm/__init__.py" in paths
    assert not any("/bin/litellm" in p and p.startswith(pypi.SITE_PACKAGES) for p in paths)
    assert not any(p.endswith(".swarm-complete") for p in paths)
    wrapper = paths["/usr/local/bin/litellm"]
    assert wrapper.mode == 0o755 and b"from litellm import run_server" in (wrapper.data or b"")


def test_keyed_layer_lists_entries_only_once(tmp_path: Path) -> None:
    cache = images.LayerCache(tmp_path)
    calls: list[int] = []

    def entries() -> list[oci.Entry]:
        calls.append(1)
        return [oci.file_entry("/a", "1")]

    first = cache.keyed_layer("k1", entries)
    assert cache.keyed_layer("k1", entries) == first and calls == [1]


def _names(entries: list[oci.Entry]) -> set[str]:
    return {e.path for e in entries}


def test_postgres_layer_has_the_server_client_and_init_files_but_no_jit() -> None:
    entries = rootfs.postgres_entries()
    names = _names(entries)
    for program in rootfs.PG_PROGRAMS:
        assert str(rootfs.PG_BIN / program) in names and f"/usr/local/bin/{program}" in names
    assert str(rootfs.PG_LIB / "plpgsql.so") in names  # initdb creates the plpgsql extension
    assert str(rootfs.PG_SHARE / "postgres.bki") in names
    assert not any("llvmjit" in n for n in names)
    dirs = {e.path: e for e in entries if e.kind == "dir"}
    assert (dirs["/var/lib/postgresql/data"].uid, dirs["/var/lib/postgresql/data"].mode) == (70, 0o700)
    assert dirs["/run/postgresql"].uid == 70  # the server's socket directory, for user 70


def test_prometheus_layer_has_the_server_and_a_default_config_it_accepts(tmp_path: Path) -> None:
    """As prom/prometheus: /bin/prometheus, and /etc/prometheus/prometheus.yml for a bare run."""
    names = _names(rootfs.prometheus_entries())
    assert {"/usr/bin/prometheus", "/usr/bin/promtool", "/bin/prometheus"} <= names
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: scripts/setup.sh installs prometheus"
    config = tmp_path / "prometheus.yml"
    config.write_text(rootfs.PROMETHEUS_DEFAULT_CONFIG)
    result = subprocess.run([promtool, "check", "config", str(config)], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_real_images_have_no_stand_in_layer() -> None:
    for ref in ("postgres:15-alpine", "prom/prometheus:v2.51.2", "redis:7-alpine",
                "haproxy:2.8-alpine", "ghcr.io/berriai/litellm:main-v1.55.8"):
        assert "standins" not in _spec(ref).layers, ref


def test_prometheus_image_owns_its_data_dir_as_nobody(tmp_path: Path) -> None:
    layer = [e for e in rootfs.prometheus_entries() if e.path == "/prometheus"]
    tar = tarfile.open(fileobj=io.BytesIO(oci.layer_tar(layer)))
    assert tar.getmember("prometheus").uid == 65534


def _run_postgres_entrypoint(tmp_path: Path, *args: str, password: str = "pw",
                             uid: int = 70) -> tuple[int, str]:
    """The entrypoint under the host's sh (busybox ash would run its own `id`/`su` applets
    before PATH stubs), with initdb/postgres/swarm-faults/su recording their
    argv and `id -u` answering `uid`."""
    bin_dir, data = tmp_path / "bin", tmp_path / "data"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "calls.log"
    fake_initdb = f'#!/bin/sh\necho "initdb $*" >>{log}\nfor a; do case "$a" in -D) d=1;; *) [ -n "$d" ] && mkdir -p "$a" && echo 15 >"$a/PG_VERSION" && touch "$a/postgresql.conf" "$a/pg_hba.conf"; d=;; esac; done\n'
    stubs = {"initdb": fake_initdb,
             "postgres": f'#!/bin/sh\necho "postgres $* <$(cat)>" >>{log}\n',
             "swarm-faults": f'#!/bin/sh\necho "exec $*" >>{log}\n',
             "id": f"#!/bin/sh\necho {uid}\n",
             "chown": f'#!/bin/sh\necho "chown $*" >>{log}\n',
             "su": f'#!/bin/sh\necho "su $*" >>{log}\n'}
    for name, text in stubs.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    script = tmp_path / "docker-entrypoint.sh"
    script.write_text(rootfs.POSTGRES_ENTRYPOINT)
    env = {"PATH": f"{bin_dir}:/bin:/usr/bin", "PGDATA": str(data), "POSTGRES_USER": "litellm",
           "POSTGRES_DB": "litellm", "POSTGRES_PASSWORD": password, "TMPDIR": str(tmp_path)}
    result = subprocess.run(["/bin/sh", str(script), *args], env=env,
                            capture_output=True, text=True, timeout=30, check=False)
    return result.returncode, (log.read_text() if log.exists() else "") + result.stderr


def test_postgres_entrypoint_initialises_once_then_runs_the_server(tmp_path: Path) -> None:
    code, calls = _run_postgres_entrypoint(tmp_path, "postgres", "-c", "hba_file=/etc/x")
    assert code == 0, calls
    lines = calls.splitlines()
    assert lines[0].startswith("initdb --username=litellm --pwfile=")
    assert "--auth-host=scram-sha-256" in lines[0] and "--locale=C.UTF-8" in lines[0]
    assert lines[1] == 'postgres --single -D ' + str(tmp_path / "data") + ' postgres <CREATE DATABASE "litellm";>'
    assert lines[2] == "exec postgres -c hba_file=/etc/x"
    assert "listen_addresses = '*'" in (tmp_path / "data/postgresql.conf").read_text()
    (tmp_path / "calls.log").unlink()
    code, calls = _run_postgres_entrypoint(tmp_path, "postgres")  # PGDATA is initialised now
    assert code == 0 and calls.splitlines() == ["exec postgres"]


def test_postgres_entrypoint_version_and_missing_password(tmp_path: Path) -> None:
    code, calls = _run_postgres_entrypoint(tmp_path, "postgres", "--version", password="")
    assert code == 0 and calls.splitlines() == ["exec postgres --version"]
    code, calls = _run_postgres_entrypoint(tmp_path, "postgres", password="")
    assert code == 1 and "superuser password is not specified" in calls


def test_postgres_entrypoint_as_root_hands_over_to_postgres(tmp_path: Path) -> None:
    """As the official image with gosu: root owns nothing of the data, postgres runs it all."""
    code, calls = _run_postgres_entrypoint(tmp_path, "postgres", "-c", "x=1", uid=0)
    script = str(tmp_path / "docker-entrypoint.sh")
    assert code == 0, calls
    assert calls.splitlines() == [
        f"chown -R postgres:postgres {tmp_path / 'data'} /run/postgresql",
        f'su -p -s /bin/sh postgres -c exec "$0" "$@" {script} postgres -c x=1']
