"""Commands as data: quoting survives hostile input through a real `sh -c`.

Each builder's shell string is executed by the local /bin/sh; the argv that arrives is
printed NUL-separated and compared, and the file-touching builders are run for real on
hostile names under tmp_path.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator import commands as c

HOSTILE = [
    "x; rm -rf /",
    "with space",
    "it's",
    'dq"uote',
    "$(touch /tmp/swarm-pwned)",
    "`id`",
    "$HOME",
    "naïve ünïcødé ✓ 🚀",
    "line1\nline2",
    "tab\there",
    "-rf",
    "--",
    "back\\slash",
    "*",
    "",
    "a|b&c>d<e",
    "~root",
]

FILE_NAMES = [h.replace("/", "_") for h in HOSTILE if h not in ("", "--", "-rf")]


def sh(
    shell: str, stdin: bytes = b"", cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["/bin/sh", "-c", shell], input=stdin, capture_output=True, cwd=cwd, timeout=10
    )


def arrived(argv: tuple[str, ...]) -> list[str]:
    """What argv the remote side sees, via printf '%s\\0'."""
    out = sh(c.to_shell(("printf", "%s\\0", *argv))).stdout.decode()
    return out.split("\0")[:-1]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_argument_arrives_intact(value: str) -> None:
    assert arrived(("before", value, "after")) == ["before", value, "after"]
    assert not Path("/tmp/swarm-pwned").exists()


def test_all_hostile_arguments_at_once() -> None:
    assert arrived(tuple(HOSTILE)) == HOSTILE


def test_to_shell_rejects_nul_empty_and_non_str() -> None:
    with pytest.raises(ValueError):
        c.to_shell(("echo", "a\0b"))
    with pytest.raises(ValueError):
        c.to_shell(())
    with pytest.raises(TypeError):
        c.to_shell(("echo", 3))  # type: ignore[arg-type]


def test_commands_carry_mutates_flag() -> None:
    assert c.uname_m().mutates is False
    assert c.compose_ps("p", "f").mutates is False
    assert c.read_file("/x").mutates is False
    assert c.compose_up("p", "f").mutates is True
    assert c.write_file("/x", 0o600).mutates is True
    assert c.mutates(("echo", "bare tuple")) is True
    assert c.Script.of(c.uname_m(), c.df("/")).mutates is False
    assert c.Script.of(c.uname_m(), c.mkdir_p("/x")).mutates is True


def test_docker_builders_argv() -> None:
    assert c.compose_up("ai-swarm", "/r/compose.yml", ["vllm"], wait=True).argv == (
        "docker", "compose", "-p", "ai-swarm", "-f", "/r/compose.yml",
        "up", "-d", "--wait", "--", "vllm",
    )  # fmt: skip
    assert c.compose_config_hash("p", "f").argv[-3:] == ("config", "--hash", "*")
    assert c.compose_ps("p", "f").argv[-4:] == ("ps", "--all", "--format", "json")
    assert c.docker_pull("redis:7", "linux/arm64").argv == (
        "docker", "pull", "--platform", "linux/arm64", "--", "redis:7",
    )  # fmt: skip
    assert c.df("/opt").argv == ("df", "-Pk", "--", "/opt")
    assert c.listening_ports().argv == ("ss", "-ltnH")
    assert c.nvidia_smi_query(["name", "memory.total"]).argv == (
        "nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits",
    )  # fmt: skip


def test_compose_hash_star_is_not_globbed(tmp_path: Path) -> None:
    (tmp_path / "decoy").write_text("")
    shell = c.to_shell(("printf", "%s\\0", *c.compose_config_hash("p", "f").argv))
    out = sh(shell, cwd=tmp_path).stdout.decode().split("\0")[:-1]
    assert out[-1] == "*"


@pytest.mark.parametrize("name", FILE_NAMES)
def test_write_then_read_file_with_hostile_name(tmp_path: Path, name: str) -> None:
    path = tmp_path / "sub dir" / name
    body = b"bin\x00ary\nlines\n\xc3\xa9 \xf0\x9f\x9a\x80\n"
    assert sh(c.write_file(str(path), 0o600).shell, stdin=body).returncode == 0
    assert path.read_bytes() == body
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == [name]  # no temp file left
    out = sh(c.read_file(str(path)).shell).stdout.decode(errors="surrogateescape")
    assert c.parse_read_file(out) == body.decode(errors="surrogateescape")


def test_read_file_missing_is_none(tmp_path: Path) -> None:
    out = sh(c.read_file(str(tmp_path / "nope; echo hi")).shell).stdout.decode()
    assert c.parse_read_file(out) is None


def test_write_file_mode_is_set_before_rename(tmp_path: Path) -> None:
    path = tmp_path / "env" / "vllm.env"
    sh(c.write_file(str(path), 0o644).shell, stdin=b"old")
    sh(c.write_file(str(path), 0o600).shell, stdin=b"SECRET=x\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "umask 077" in c.write_file(str(path), 0o600).argv[2]


def test_append_file(tmp_path: Path) -> None:
    path = tmp_path / "audit $(x).log"
    for line in (b'{"a": 1}\n', b'{"b": 2}\n'):
        assert sh(c.append_file(str(path)).shell, stdin=line).returncode == 0
    assert path.read_bytes() == b'{"a": 1}\n{"b": 2}\n'


@pytest.mark.parametrize("name", ["rel; rm -rf /", "20260101T000000-ab cd", "ünï"])
def test_install_dir_and_switch_symlink(tmp_path: Path, name: str) -> None:
    releases = tmp_path / "releases"
    releases.mkdir()
    tmp = releases / f".tmp-{name}"
    tmp.mkdir()
    (tmp / "compose.yml").write_text("services: {}\n")
    final = releases / name
    assert sh(c.install_dir(str(tmp), str(final)).shell).returncode == 0
    link = tmp_path / "current"
    for target in (releases / "old", final):
        assert sh(c.switch_symlink(str(target), str(link)).shell).returncode == 0
        assert os.readlink(link) == str(target)
    out = sh(c.read_link(str(link)).shell).stdout.decode()
    assert out == f"{final}\n"
    assert sh(c.read_link(str(tmp_path / "none")).shell).stdout == b""


def test_sha256_files_and_tree(tmp_path: Path) -> None:
    names = ["plain", "a b", "x; rm -rf /", "ünï", "new\nline", "back\\slash"]
    for name in names:
        (tmp_path / name).write_bytes(name.encode())
    paths = [str(tmp_path / n) for n in names] + [str(tmp_path / "missing")]
    files = c.parse_sha256sum(sh(c.sha256_files(paths).shell).stdout.decode())
    tree = c.parse_sha256sum(sh(c.sha256_tree(str(tmp_path)).shell).stdout.decode())
    import hashlib

    expected = {str(tmp_path / n): hashlib.sha256(n.encode()).hexdigest() for n in names}
    assert files == expected
    assert tree == expected
    assert sh(c.sha256_tree(str(tmp_path / "gone")).shell).returncode == 0


def test_remove_releases_guard() -> None:
    cmd = c.remove_releases("/opt/ai-swarm/", ["r1", "r 2"])
    assert cmd.argv == (
        "rm",
        "-rf",
        "--",
        "/opt/ai-swarm/releases/r1",
        "/opt/ai-swarm/releases/r 2",
    )
    for bad in ["..", ".", "", "../../etc", "a/b", "/"]:
        with pytest.raises(ValueError):
            c.remove_releases("/opt/ai-swarm", [bad])
    for root in ["/", "relative/root"]:
        with pytest.raises(ValueError):
            c.remove_releases(root, ["r1"])
    with pytest.raises(ValueError):
        c.remove_releases("/opt/ai-swarm", [])


def test_lock_acquire_release(tmp_path: Path) -> None:
    lock = str(tmp_path / "root dir" / ".lock")
    first = sh(c.lock_acquire(lock).shell, stdin=b'{"who": "alice"}')
    assert first.returncode == 0
    second = sh(c.lock_acquire(lock).shell, stdin=b'{"who": "bob"}')
    assert second.returncode == c.LOCK_HELD_EXIT
    assert second.stdout == b'{"who": "alice"}'
    holder = sh(c.lock_holder(lock).shell).stdout.decode()
    assert c.parse_read_file(holder) == '{"who": "alice"}'
    assert sh(c.lock_release(lock).shell).returncode == 0
    assert sh(c.lock_acquire(lock).shell, stdin=b"{}").returncode == 0
    with pytest.raises(ValueError):
        c.lock_release("/opt/ai-swarm")


def test_script_reports_each_command() -> None:
    script = c.Script.of(
        c.read_only("printf", "%s", "no newline; $(x)"),
        c.read_only("sh", "-c", "echo oops >&2; echo out; exit 7"),
        c.read_only("echo", "never runs"),
    )
    proc = sh(script.to_command().shell)
    assert proc.returncode == 7
    steps = script.split(proc.stdout.decode(), proc.stderr.decode())
    assert [s.exit_status for s in steps] == [0, 7, None]
    assert steps[0].stdout == "no newline; $(x)"
    assert (steps[1].stdout, steps[1].stderr) == ("out\n", "oops\n")


def test_script_run_all_mode_exits_with_first_failure() -> None:
    script = c.Script.of(c.read_only("false"), c.read_only("echo", "ran"), stop_on_error=False)
    proc = sh(script.to_command().shell)
    steps = script.split(proc.stdout.decode(), proc.stderr.decode())
    assert proc.returncode == 1
    assert [s.exit_status for s in steps] == [1, 0]
    assert steps[1].stdout == "ran\n"


def test_script_hostile_arguments_survive() -> None:
    script = c.Script.of(*(c.read_only("printf", "%s\\0", h) for h in HOSTILE))
    proc = sh(script.to_command().shell)
    steps = script.split(proc.stdout.decode(), proc.stderr.decode())
    assert [s.stdout for s in steps] == [h + "\0" for h in HOSTILE]


def test_network_create_is_idempotent_snippet() -> None:
    argv = c.network_create("ai; swarm", "172.20.0.0/16").argv
    assert argv[:2] == ("sh", "-c") and argv[-2:] == ("ai; swarm", "172.20.0.0/16")
    assert "ai; swarm" not in argv[2]


def test_parsers() -> None:
    df = "Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/sda1 100 40 60 40% /opt/a b\n"
    assert c.parse_df(df) == c.DiskFree(100, 60, "/opt/a b")
    ss = "LISTEN 0 4096 0.0.0.0:22 0.0.0.0:*\nLISTEN 0 511 [::]:8000 [::]:*\nLISTEN 0 5 *:80 *:*\n"
    assert c.parse_listening_ports(ss) == {22, 8000, 80}
    assert c.parse_compose_ps('[{"Service": "a"}]') == [{"Service": "a"}]
    assert c.parse_compose_ps('{"Service": "a"}\n{"Service": "b"}\n') == [
        {"Service": "a"},
        {"Service": "b"},
    ]
    assert c.parse_compose_ps("") == []
    assert c.parse_config_hash("redis abc123\nvllm def456\n") == {
        "redis": "abc123",
        "vllm": "def456",
    }


# --------------------------------------------------------------------------- properties


ARG = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=40)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ARG, min_size=1, max_size=6))
def test_any_argv_arrives_intact(argv: list[str]) -> None:
    assert arrived(tuple(argv)) == argv


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(ARG, ARG, st.integers(0, 255)), min_size=1, max_size=5))
def test_any_outputs_split_back_per_command(steps: list[tuple[str, str, int]]) -> None:
    script = c.Script.of(
        *(
            c.read_only(
                "sh", "-c", 'printf %s "$1"; printf %s "$2" >&2; exit "$3"', "sh", o, e, str(s)
            )
            for o, e, s in steps
        ),
        stop_on_error=False,
    )
    proc = sh(script.to_command().shell)
    results = script.split(proc.stdout.decode(), proc.stderr.decode())
    assert [(r.stdout, r.stderr, r.exit_status) for r in results] == steps
    first_failure = next((s for _, _, s in steps if s), 0)
    assert proc.returncode == first_failure


def test_images_present_names_only_what_is_neither_there_nor_pullable(tmp_path: Path) -> None:
    """A real `sh -c` with a `docker` on PATH that knows one image and reaches no registry."""
    fake = tmp_path / "docker"
    fake.write_text('#!/bin/sh\n[ "$1 $2 $3 $4" = "image inspect -- reg/app:1@sha256:aa" ] && exit 0\n'
                    'printf "%s\\n" "$*" >> "$(dirname "$0")/calls"\nexit 1\n')
    fake.chmod(0o755)
    refs = ["reg/app:1@sha256:aa", *[h for h in HOSTILE if h and "\n" not in h]]
    command = c.images_present(refs)
    done = subprocess.run(["/bin/sh", "-c", command.shell], capture_output=True, timeout=10,
                          env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"})
    assert done.returncode == 1
    assert c.parse_missing_images(done.stdout.decode()) == refs[1:]   # each asked of the registry, named as given
    assert "pull --quiet -- x; rm -rf /" in (tmp_path / "calls").read_text()
    assert not Path("/tmp/swarm-pwned").exists()
