"""Remote commands as data (one module per tool: files, lock, docker, system, releases): argv tuples, built by pure functions, quoted in one place.

A `Command` is an argv tuple plus a `mutates` flag: read-only commands (inspect, ps,
cat, df) may run under `--check`, mutating ones are only recorded there. `to_shell` is
the single place where argv becomes a shell string (`shlex.join`); nothing else in
swarm formats shell text. When a builder needs shell logic (if/||, redirections) it
uses a fixed script text with the data passed as positional parameters:
`("sh", "-c", "<fixed text using \"$1\">", "sh", data...)` -- the data never becomes code.

A `Script` batches several commands into one remote `sh -c` so a batch costs one round
trip. Each command is framed by random markers on stdout and stderr, so the result of a
batch splits back into per-command exit status and output, and a failure names the
command that failed.
"""

from __future__ import annotations

from orchestrator.commands.base import (
    Argv,
    Command,
    Runnable,
    Script,
    StepResult,
    as_command,
    mutates,
    mutating,
    read_only,
    sh,
    to_shell,
)
from orchestrator.commands.docker import (
    CONTAINER_FIELDS,
    NETWORK_MISSING,
    NETWORK_PRESENT,
    compose_config_hash,
    compose_ps,
    compose_remove,
    compose_up,
    container_logs,
    container_states,
    docker_inspect,
    docker_ps_all,
    docker_pull,
    docker_version,
    image_inspect,
    images_present,
    network_create,
    parse_compose_ps,
    parse_config_hash,
    parse_missing_images,
)
from orchestrator.commands.files import (
    MISSING,
    PRESENT,
    append_file,
    cat_file,
    install_dir,
    mkdir_p,
    parse_read_file,
    parse_sha256sum,
    read_file,
    read_link,
    sha256_files,
    sha256_tree,
    switch_symlink,
    write_file,
)
from orchestrator.commands.lock import (
    APPLIED_FILE,
    LOCK_HELD_EXIT,
    LOOK_LOCKED,
    LOOK_UNCHANGED,
    SKIPPED_EXIT,
    lock_acquire,
    lock_holder,
    lock_release,
    look_lock,
    only_if_locked,
    run_marker,
    unlock_if_mine,
)
from orchestrator.commands.releases import (
    STORE_SUFFIX,
    TMP_PREFIX,
    carry_env_files,
    copy_release,
    extract_release,
    infra_ready,
    list_releases,
    release_manifests,
    remove_current,
    remove_release,
    remove_releases,
    remove_stale_tmp,
    take_services,
)
from orchestrator.commands.system import (
    DiskFree,
    df,
    listening_ports,
    node_clock,
    nvidia_smi_query,
    parse_df,
    parse_listening_ports,
    uname_m,
)

__all__ = ['APPLIED_FILE', 'Argv', 'CONTAINER_FIELDS', 'Command', 'DiskFree', 'LOCK_HELD_EXIT', 'LOOK_LOCKED', 'LOOK_UNCHANGED', 'MISSING', 'NETWORK_MISSING', 'NETWORK_PRESENT', 'PRESENT', 'Runnable', 'SKIPPED_EXIT', 'STORE_SUFFIX', 'Script', 'StepResult', 'TMP_PREFIX', 'append_file', 'as_command', 'carry_env_files', 'cat_file', 'compose_config_hash', 'compose_ps', 'compose_remove', 'compose_up', 'container_logs', 'container_states', 'copy_release', 'df', 'docker_inspect', 'docker_ps_all', 'docker_pull', 'docker_version', 'extract_release', 'image_inspect', 'images_present', 'infra_ready', 'install_dir', 'list_releases', 'listening_ports', 'lock_acquire', 'lock_holder', 'lock_release', 'look_lock', 'mkdir_p', 'mutates', 'mutating', 'network_create', 'node_clock', 'nvidia_smi_query', 'only_if_locked', 'parse_compose_ps', 'parse_config_hash', 'parse_df', 'parse_listening_ports', 'parse_missing_images', 'parse_read_file', 'parse_sha256sum', 'read_file', 'read_link', 'read_only', 'release_manifests', 'remove_current', 'remove_release', 'remove_releases', 'remove_stale_tmp', 'run_marker', 'sh', 'sha256_files', 'sha256_tree', 'switch_symlink', 'take_services', 'to_shell', 'uname_m', 'unlock_if_mine', 'write_file']
