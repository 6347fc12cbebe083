"""What ``acdg serve`` needs from the machine before it serves: the listening address, the
TLS files, a writable records file. Each check raises :class:`ConfigError` with one line
naming the problem and the fix; ``acdg serve`` exits 2 with it, ``acdg doctor`` (``acdg
serve --check``) reports it as a failed finding.
"""

from __future__ import annotations

import errno
import socket
import ssl
from pathlib import Path

from ..errors import ConfigError

__all__ = ["bind", "load_tls", "writable"]

_BIND_FIXES = {
    errno.EADDRINUSE: "another process listens there: stop it or choose another port",
    errno.EADDRNOTAVAIL: "not an address of this machine: use 0.0.0.0 or one of its own",
    errno.EACCES: "ports below 1024 need privileges: use a higher port",
}


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port``, ready for uvicorn to listen on (inherited by
    ``--workers`` processes)."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"{where}: {host!r} is not an address ({exc.strerror}): use "
                          "0.0.0.0, 127.0.0.1 or an address of this machine") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        fix = _BIND_FIXES.get(exc.errno or 0, "")
        raise ConfigError(f"{where}: {exc.strerror}" + (f": {fix}" if fix else "")) from None
    sock.set_inheritable(True)
    return sock


def load_tls(certfile: str | None, keyfile: str | None) -> ssl.SSLContext | None:
    """The server's TLS context from the certificate (chain) and its key, or ``None``
    without either."""
    if not certfile and not keyfile:
        return None
    if not certfile or not keyfile:
        raise ConfigError("TLS needs both files: a certificate needs its key (--ssl-keyfile), "
                          "and a key its certificate (--ssl-certfile)")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile, keyfile)
    except FileNotFoundError as exc:
        raise ConfigError(f"{exc.filename}: no such file") from None
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc.strerror or exc
        raise ConfigError(f"{certfile} and {keyfile}: {reason}: they must be PEM files, the "
                          "key the certificate's own") from None
    return context


def writable(path: str) -> None:
    """``path`` can be appended to (created if need be)."""
    try:
        with Path(path).open("ab"):
            pass
    except OSError as exc:
        raise ConfigError(f"records file {path}: {exc.strerror}: give a file in a "
                          "directory this user may write") from None
