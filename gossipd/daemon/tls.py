"""TLS for the daemon, an optional transport: ``ssl.SSLContext`` builders.

Plain functions over the ``[tls]`` files (``cert``, ``key``, ``ca``,
``require_client_cert``): the driver hands :func:`server_context` to aiohttp's
site and :func:`client_context` to the peer client's connector. Errors are a
:class:`TLSError` naming the setting and the file, for a one-line start-up
failure.

TLS protects the transport (and, with ``require_client_cert``, who may open a
connection at all); the sealed envelope (``gossipd.envelope``) protects each
message whatever the transport. They stack: TLS hides the clear envelope fields
and stops strangers at the handshake, the seal binds a message to its receiver.
"""

from __future__ import annotations

import ssl
from pathlib import Path

__all__ = ["TLSError", "client_context", "server_context"]

_MIN_VERSION = ssl.TLSVersion.TLSv1_2


class TLSError(ValueError):
    """A TLS setting that cannot be used; one line naming the setting and the file."""


def server_context(
    cert: str | Path,
    key: str | Path,
    *,
    ca: str | Path | None = None,
    require_client_cert: bool = False,
) -> ssl.SSLContext:
    """A server context presenting ``cert``/``key``; with ``require_client_cert``,
    only clients holding a certificate signed by ``ca`` complete the handshake."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _MIN_VERSION
    _load_chain(ctx, cert, key)
    if require_client_cert:
        if ca is None:
            raise TLSError("tls.require_client_cert: needs tls.ca, the CA that signs the peers' certificates")
        _load_ca(ctx, ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(
    *,
    ca: str | Path | None = None,
    cert: str | Path | None = None,
    key: str | Path | None = None,
) -> ssl.SSLContext:
    """A client context that verifies peers' certificates and host names.

    With ``ca``, peers are verified against that CA *only* (no public CA can
    vouch for a cluster member); without it, against the system's roots.
    ``cert``/``key`` are presented to servers that ask (mutual TLS): a node's
    certificate then needs both the serverAuth and clientAuth key usages.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname by default
    ctx.minimum_version = _MIN_VERSION
    if ca is not None:
        _load_ca(ctx, ca)
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if (cert is None) != (key is None):
        raise TLSError("tls.cert and tls.key: give both or neither")
    if cert is not None and key is not None:
        _load_chain(ctx, cert, key)
    return ctx


def _load_chain(ctx: ssl.SSLContext, cert: str | Path, key: str | Path) -> None:
    for setting, path in (("tls.cert", cert), ("tls.key", key)):
        if not Path(path).is_file():
            raise TLSError(f"{setting}: no such file {path}")
    try:
        ctx.load_cert_chain(certfile=str(cert), keyfile=str(key))
    except ssl.SSLError as exc:
        raise TLSError(f"tls.cert/tls.key: cannot use {cert} with {key} ({exc.reason or exc}); "
                       "expected a PEM certificate and its matching unencrypted PEM key") from None
    except OSError as exc:
        raise TLSError(f"tls.cert/tls.key: cannot read {cert} or {key} ({exc.strerror or exc})") from None


def _load_ca(ctx: ssl.SSLContext, ca: str | Path) -> None:
    if not Path(ca).is_file():
        raise TLSError(f"tls.ca: no such file {ca}")
    try:
        ctx.load_verify_locations(cafile=str(ca))
    except ssl.SSLError as exc:
        raise TLSError(f"tls.ca: {ca} holds no usable PEM certificate ({exc.reason or exc})") from None
    except OSError as exc:
        raise TLSError(f"tls.ca: cannot read {ca} ({exc.strerror or exc})") from None
