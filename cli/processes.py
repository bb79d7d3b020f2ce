"""Background processes of a local cluster (nodes, the link proxy): start, recognize, stop.

cli/DESIGN.md explains the rules: processes are spawned in their own session with their
output appended to a log, recognized later by an argument of their command line (the
pid-reuse guard), and reaped whenever they are looked at so none lingers as a zombie.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "POLL_INTERVAL_S",
    "describe_exit",
    "exit_code",
    "failure",
    "file_size",
    "has_exited",
    "is_ours",
    "log_tail",
    "reap",
    "send_signal",
    "spawn",
    "wait_gone",
]

POLL_INTERVAL_S = 0.05
_LOG_TAIL_BYTES_MAX = 64 * 1024


def spawn(command: Sequence[str], log: Path, banner: str) -> int:
    """Start `command` in its own session, stdout and stderr appended to `log`.

    posix_spawn rather than subprocess.Popen: the process must outlive this command, and
    a Popen object dropped while its child runs warns (ResourceWarning) on collection.
    setsid puts it in its own session, so Ctrl-C on the command does not reach it.
    Raises OSError when the program cannot be started.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    moment = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    with log.open("a", encoding="utf-8") as stream:
        stream.write(f"--- meridian cluster: {banner} at {moment} ---\n")
    environment = dict(os.environ)
    environment["PYTHONUNBUFFERED"] = "1"
    return os.posix_spawn(
        command[0],
        list(command),
        environment,
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ],
        setsid=True,
    )


def is_ours(pid: int, marker: Path) -> bool:
    """Whether `pid` is alive and is the process we started with argument `marker`.

    Pids are reused: after a reboot or enough churn, a recorded pid may name an unrelated
    process, which must never be signalled. Our processes carry an absolute path (a
    node's config, the proxy's cluster folder) as an argument, which no unrelated process
    is likely to have.
    """
    reap(pid)
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return False
        # Without /proc (not Linux) existence is all that can be checked.
        return _exists(pid)
    except OSError:
        return False
    # A zombie has an empty command line: it has exited and only waits to be reaped.
    return os.fsencode(str(marker)) in cmdline.split(b"\0")


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap(pid: int) -> int | None:
    """Collect `pid`'s exit status if it is our exited child; its exit code, else None."""
    try:
        reaped, wait_status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    if reaped == 0:
        return None
    return os.waitstatus_to_exitcode(wait_status)


def send_signal(pid: int, signal_number: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal_number)


def has_exited(pid: int) -> bool:
    """Whether `pid` has finished exiting: reaped, or a zombie that holds nothing any more.

    A process being killed loses its command line (its memory) before it closes its
    files and sockets, so `is_ours` turns False too early to mean "its port is free".
    """
    reap(pid)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        # Without /proc (not Linux) existence is all that can be checked.
        return Path("/proc/self").exists() or not _exists(pid)
    except OSError:
        return False
    # The state follows the command name, which is in parentheses and may hold anything.
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def wait_gone(pids: Mapping[str, int], timeout_s: float) -> list[str]:
    """Wait until every process has exited; returns the names alive at the deadline."""
    deadline = time.monotonic() + timeout_s
    alive = [name for name, pid in pids.items() if not has_exited(pid)]
    while alive and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL_S)
        alive = [name for name in alive if not has_exited(pids[name])]
    return alive


def exit_code(pid: int, timeout_s: float) -> int | None:
    """Wait a moment for an exiting child's status, to say how it ended; None if unknown."""
    deadline = time.monotonic() + timeout_s
    while True:
        code = reap(pid)
        if code is not None or time.monotonic() >= deadline:
            return code
        time.sleep(POLL_INTERVAL_S)


def describe_exit(code: int | None, what: str = "its node") -> str:
    if code is None:
        return f"{what} exited"
    if code < 0:
        return f"{what} was killed by signal {-code}"
    return f"{what} exited with code {code}"


def log_tail(path: Path, offset: int, lines_max: int) -> list[str]:
    """The last `lines_max` lines written to `path` after `offset`."""
    try:
        with path.open("rb") as log:
            size = log.seek(0, os.SEEK_END)
            log.seek(max(offset, size - _LOG_TAIL_BYTES_MAX))
            data = log.read()
    except OSError:
        return []
    return data.decode("utf-8", errors="replace").splitlines()[-lines_max:]


def failure(subject: str, reason: str, log: Path, offset: int, lines_max: int = 20) -> str:
    """The message "SUBJECT: REASON; last lines of LOG:" and the lines since `offset`."""
    lines = log_tail(log, offset, lines_max)
    quoted = "\n".join(f"    {line}" for line in lines) if lines else "    (the log is empty)"
    return f"{subject}: {reason}; last lines of {log}:\n{quoted}"


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
