"""sd_notify without libsystemd: READY, STOPPING, STATUS and WATCHDOG over NOTIFY_SOCKET.

systemd passes a datagram socket path in ``NOTIFY_SOCKET`` (a filesystem path, or an abstract
socket written with a leading '@') and, when ``WatchdogSec=`` is set, the interval in
``WATCHDOG_USEC`` (and the pid it applies to in ``WATCHDOG_PID``). Without them every call is
a no-op, so the daemon runs the same by hand and under systemd.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import structlog

log = structlog.get_logger(__name__)


def _socket_address(raw: str) -> str | bytes:
    if raw.startswith("@"):
        return b"\0" + raw[1:].encode()  # Linux abstract namespace
    return raw


class SystemdNotifier:
    """One datagram socket to the service manager; failures are logged, never raised."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        self._address: str | bytes | None = _socket_address(raw) if raw else None
        self._sock: socket.socket | None = None
        if self._address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)
        self.watchdog_usec = _watchdog_usec(env)
        self._failures = 0

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to ping: half of WatchdogSec, as sd_watchdog_enabled(3) recommends; None: off."""
        if self.watchdog_usec is None or not self.enabled:
            return None
        return self.watchdog_usec / 1e6 / 2

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=value`` lines in one datagram. Returns whether it was sent."""
        if self._sock is None or self._address is None:
            return False
        payload = "\n".join(assignments).encode()
        try:
            self._sock.sendto(payload, self._address)
        except OSError as exc:
            self._failures += 1
            if self._failures == 1 or self._failures % 100 == 0:
                log.warning("sd_notify failed", error=str(exc), failures=self._failures)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={_one_line(status)}", f"MAINPID={os.getpid()}")

    def stopping(self, status: str = "stopping") -> bool:
        return self.notify("STOPPING=1", f"STATUS={_one_line(status)}")

    def status(self, status: str) -> bool:
        return self.notify(f"STATUS={_one_line(status)}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    raw = env.get("WATCHDOG_USEC")
    if not raw:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None  # meant for another process (e.g. we were started by a wrapper)
    try:
        usec = int(raw)
    except ValueError:
        log.warning("ignoring malformed WATCHDOG_USEC", value=raw)
        return None
    return usec if usec > 0 else None


def _one_line(text: str) -> str:
    return " ".join(text.split())
