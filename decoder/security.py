"""Optional CURVE encryption and client authentication for rigs on a shared network.

Off by default (the daemon binds to loopback). When on, every socket the daemon binds is a
CURVE server using the daemon's key pair, and only clients whose public key is in
``authorized_clients_dir`` may connect (pyzmq's ZAP authenticator). Keys are the files written
by ``zmq.auth.create_certificates``. When frames come from a publisher the daemon connects to,
``frames_server_public_key`` makes the daemon a CURVE client of it.
"""

from __future__ import annotations

from pathlib import Path

import structlog
import zmq
import zmq.asyncio
import zmq.auth
from zmq.auth.asyncio import AsyncioAuthenticator

from decoder.settings import SecuritySettings

log = structlog.get_logger(__name__)


class SecurityError(ValueError):
    """Keys or key directories that cannot be used; the message names the file."""


def _load_keypair(path: Path) -> tuple[bytes, bytes]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise SecurityError(f"cannot read CURVE key file {path}: {exc}") from exc
    if secret is None:
        raise SecurityError(f"{path} holds no secret key (use the .key_secret file)")
    return public, secret


def _load_public(path: Path) -> bytes:
    try:
        public, _ = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise SecurityError(f"cannot read CURVE public key file {path}: {exc}") from exc
    return public


class Curve:
    """Keys loaded and checked at startup; applies them to sockets; owns the authenticator."""

    def __init__(self, settings: SecuritySettings) -> None:
        self.enabled = settings.curve
        self._auth: AsyncioAuthenticator | None = None
        self._public = self._secret = b""
        self._frames_server: bytes | None = None
        self._clients_dir: Path | None = None
        if not self.enabled:
            return
        assert settings.server_secret_key is not None and settings.authorized_clients_dir is not None
        if not zmq.has("curve"):
            raise SecurityError("this libzmq was built without CURVE support")
        self._public, self._secret = _load_keypair(settings.server_secret_key)
        clients = settings.authorized_clients_dir
        if not clients.is_dir():
            raise SecurityError(f"authorized_clients_dir {clients} is not a directory")
        self._clients_dir = clients
        self.authorized_clients = sorted(p.name for p in clients.glob("*.key"))
        if not self.authorized_clients:
            log.warning("no authorized client keys: nobody can connect", directory=str(clients))
        if settings.frames_server_public_key is not None:
            self._frames_server = _load_public(settings.frames_server_public_key)

    def start(self, context: zmq.asyncio.Context) -> None:
        """Start the ZAP authenticator; must run before any CURVE socket binds."""
        if not self.enabled:
            return
        self._auth = AsyncioAuthenticator(context)
        self._auth.start()
        self._auth.configure_curve(domain="*", location=str(self._clients_dir))
        log.info("CURVE authentication on", authorized_clients=len(self.authorized_clients))

    def server(self, sock: zmq.Socket) -> None:  # type: ignore[type-arg]
        """Make a socket the daemon binds a CURVE server."""
        if not self.enabled:
            return
        sock.curve_secretkey = self._secret
        sock.curve_publickey = self._public
        sock.curve_server = True

    def client(self, sock: zmq.Socket) -> None:  # type: ignore[type-arg]
        """Make the frames socket (when it connects) a CURVE client of the publisher."""
        if not self.enabled or self._frames_server is None:
            return
        sock.curve_secretkey = self._secret
        sock.curve_publickey = self._public
        sock.curve_serverkey = self._frames_server

    def stop(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
