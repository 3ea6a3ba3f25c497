"""The processes a benchmark measures: the daemon and the echo floors, each its own process.

Each runs with its output in a log file, its settings in ACTIONLOOP_* environment variables
(the daemon) or flags (the echo), is stopped with SIGTERM and killed if it hangs. A death at
any point is a BenchError carrying the end of its log.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message says which step failed and why."""


def free_tcp_port() -> int:
    """A port free on loopback right now (the OS picks it; a tiny race before use is accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def loopback_endpoints() -> dict[str, str]:
    return {name: f"tcp://127.0.0.1:{free_tcp_port()}" for name in ("frames", "actions", "control")}


class ManagedProcess:
    """A child process with its output in a log file; stopped with SIGTERM, killed if it hangs."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path,
                 realtime_priority: int | None = None) -> None:
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = log_path.open("w")
        preexec = None
        if realtime_priority is not None:
            param = os.sched_param(realtime_priority)
            preexec = lambda: os.sched_setscheduler(0, os.SCHED_FIFO, param)  # noqa: E731  (inherited by its threads)
        self.proc = subprocess.Popen(
            list(argv), cwd=REPO_ROOT, env=dict(env), stdout=self._log_file, stderr=subprocess.STDOUT,
            preexec_fn=preexec,
        )
        self.returncode: int | None = None

    def check_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise BenchError(f"{self.name} exited with code {code} during the benchmark:\n{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        self._log_file.flush()
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def stop(self, timeout_s: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("process did not stop on SIGTERM; killing it", name=self.name)
                self.proc.kill()
                self.proc.wait()
        self.returncode = self.proc.returncode
        self._log_file.close()
        return int(self.returncode)

    def __enter__(self) -> ManagedProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _child_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONLOOP_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def start_echo(endpoints: Mapping[str, str], log_path: Path, realtime_priority: int | None = None, *,
               bare: bool = False) -> ManagedProcess:
    """The protocol echo (the transport floor), or with `bare` the bare pyzmq echo."""
    argv = [sys.executable, "-m", "tools.bench.echo", "--frames-endpoint", endpoints["frames"],
            "--actions-endpoint", endpoints["actions"], *(["--bare"] if bare else [])]
    return ManagedProcess("bare echo" if bare else "echo", argv, _child_env({}), log_path, realtime_priority)


def daemon_env(bundle: Path, endpoints: Mapping[str, str], backend: str, mode: str, threads: int,
               decision_log: Path) -> dict[str, str]:
    """The daemon's settings for one run, as ACTIONLOOP_* environment variables."""
    return {
        "ACTIONLOOP_MODEL__BUNDLE": str(bundle),
        "ACTIONLOOP_SOCKETS__FRAMES": endpoints["frames"],
        "ACTIONLOOP_SOCKETS__FRAMES_MODE": "connect",
        "ACTIONLOOP_SOCKETS__ACTIONS": endpoints["actions"],
        "ACTIONLOOP_SOCKETS__CONTROL": endpoints["control"],
        "ACTIONLOOP_BACKEND__NAME": backend,
        "ACTIONLOOP_BACKEND__MODE": mode,
        "ACTIONLOOP_BACKEND__THREADS": str(threads),
        "ACTIONLOOP_DECISION_LOG__PATH": str(decision_log),
        "ACTIONLOOP_LOGGING__FORMAT": "json",
    }


def start_daemon(bundle: Path, endpoints: Mapping[str, str], backend: str, mode: str, threads: int,
                 run_dir: Path, realtime_priority: int | None = None) -> ManagedProcess:
    env = _child_env(daemon_env(bundle, endpoints, backend, mode, threads, run_dir / "decisions.msgpack"))
    return ManagedProcess(f"daemon ({backend}, {mode})", [sys.executable, "-m", "decoder"], env,
                          run_dir / "daemon.log", realtime_priority)


def use_realtime_scheduling(priority: int) -> None:
    """SCHED_FIFO for this process's current thread; threads started later inherit it."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (PermissionError, OSError) as exc:
        raise BenchError(f"cannot use real-time priority {priority} (SCHED_FIFO): {exc}; run as a user with "
                         "CAP_SYS_NICE or an RLIMIT_RTPRIO >= the priority, or leave --realtime out") from None
