"""Connection options shared by every process: flags, FLOWFORGE_* variables, nats.connect."""

import argparse
import asyncio
import collections
import contextlib
import logging
import os
import ssl
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.errors import AuthorizationError

from flowforge.credfiles import check_creds_file, check_nkey_file
from protocol.errors import NotAuthorized, NotConnected
from protocol.subjects import DEFAULT_NAMESPACE, Subjects

log = logging.getLogger("flowforge.connection")

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_PING_INTERVAL_S = 5.0
MAX_OUTSTANDING_PINGS = 2


@dataclass(frozen=True, slots=True)
class ConnectOptions:
    """How to reach NATS: URL plus optional credentials and TLS."""

    url: str = DEFAULT_NATS_URL
    namespace: str = DEFAULT_NAMESPACE
    creds_file: str | None = None
    nkey_seed_file: str | None = None
    user: str | None = None
    password: str | None = None
    token: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    identity: str | None = None
    """Who this process is under NATS authorization (``flowforge auth init`` writes one per
    role); sets its inbox prefix and the last token of its API requests and triggers."""
    ping_interval_s: float = DEFAULT_PING_INTERVAL_S
    """How often the server is pinged; after MAX_OUTSTANDING_PINGS unanswered the connection is
    stale and the client moves to another server. A host cut off from the network shows no
    closed socket, only silence: this bounds how long a process stays on a lost server."""

    @property
    def subjects(self) -> Subjects:
        return Subjects(self.namespace, self.identity)


def env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"FLOWFORGE_{name}", default)


def add_connection_args(parser: argparse.ArgumentParser, *, nats_default: str | None) -> None:
    """Add --nats, --namespace and credential flags, each defaulting to FLOWFORGE_*."""
    g = parser.add_argument_group("connection (each also read from FLOWFORGE_<NAME>)")
    g.add_argument("--nats", default=env("NATS_URL", nats_default), metavar="URL",
                   help="NATS server URL [FLOWFORGE_NATS_URL]")
    g.add_argument("--namespace", default=env("NAMESPACE", DEFAULT_NAMESPACE),
                   help="subject prefix, to run several deployments on one NATS "
                   "[FLOWFORGE_NAMESPACE]")
    g.add_argument("--creds", default=env("CREDS"), metavar="FILE",
                   help="NATS credentials file [FLOWFORGE_CREDS]")
    g.add_argument("--nkey", default=env("NKEY"), metavar="FILE",
                   help="NKey seed file [FLOWFORGE_NKEY]")
    g.add_argument("--user", default=env("USER"), help="[FLOWFORGE_USER]")
    g.add_argument("--password", default=env("PASSWORD"), help="[FLOWFORGE_PASSWORD]")
    g.add_argument("--token", default=env("TOKEN"), help="[FLOWFORGE_TOKEN]")
    g.add_argument("--tls-cert", default=env("TLS_CERT"), metavar="FILE", help="[FLOWFORGE_TLS_CERT]")
    g.add_argument("--tls-key", default=env("TLS_KEY"), metavar="FILE", help="[FLOWFORGE_TLS_KEY]")
    g.add_argument("--tls-ca", default=env("TLS_CA"), metavar="FILE", help="[FLOWFORGE_TLS_CA]")
    g.add_argument("--ping-interval", type=float, metavar="SECONDS",
                   default=env("PING_INTERVAL", str(DEFAULT_PING_INTERVAL_S)),
                   help="ping the server this often; a server silent for 3 pings in a row "
                   "is left for another of --nats (default: %(default)s) [FLOWFORGE_PING_INTERVAL]")
    g.add_argument("--identity", default=env("IDENTITY"), metavar="NAME",
                   help="who this process is under NATS authorization, as `flowforge auth init` "
                   "named it (its .env file sets this) [FLOWFORGE_IDENTITY]")


def options_from_args(ns: argparse.Namespace, url: str | None = None) -> ConnectOptions:
    return ConnectOptions(
        url=url or ns.nats or DEFAULT_NATS_URL,
        namespace=ns.namespace,
        creds_file=ns.creds,
        nkey_seed_file=ns.nkey,
        user=ns.user,
        password=ns.password,
        token=ns.token,
        tls_cert=ns.tls_cert,
        tls_key=ns.tls_key,
        tls_ca=ns.tls_ca,
        identity=ns.identity or None,
        ping_interval_s=max(0.5, ns.ping_interval),
    )


def _tls(opts: ConnectOptions) -> ssl.SSLContext | None:
    if not (opts.tls_ca or opts.tls_cert):
        return None
    try:
        ctx = ssl.create_default_context(cafile=opts.tls_ca)
        if opts.tls_cert:
            ctx.load_cert_chain(opts.tls_cert, opts.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise NotConnected(f"cannot use the TLS files (--tls-ca {opts.tls_ca}, --tls-cert "
                           f"{opts.tls_cert}, --tls-key {opts.tls_key}): {exc}") from None
    return ctx


def _check_files(opts: ConnectOptions) -> None:
    if opts.creds_file is not None:
        check_creds_file(opts.creds_file)
    if opts.nkey_seed_file is not None:
        check_nkey_file(opts.nkey_seed_file)


async def connect(
    opts: ConnectOptions,
    *,
    name: str,
    reconnect: bool = True,
    initial_attempts: int = 2,
    connect_timeout_s: float = 3.0,
    on_disconnect: Callable[[], Awaitable[None]] | None = None,
    on_reconnect: Callable[[], Awaitable[None]] | None = None,
    on_closed: Callable[[], Awaitable[None]] | None = None,
) -> NATS:
    """Connect, or raise NotConnected saying which URL could not be reached."""
    _check_files(opts)
    errors = _ErrorLog()
    kwargs = _nats_options(opts, name, reconnect, initial_attempts, connect_timeout_s)
    kwargs.update(
        disconnected_cb=on_disconnect, reconnected_cb=on_reconnect,
        closed_cb=on_closed,  # closed for good: by us, or by the server after a protocol error
        error_cb=errors.note,
    )
    try:
        nc = await _connect_or_tls_failure(
            {k: v for k, v in kwargs.items() if v is not None}, errors.tls_failed,
            max(1, initial_attempts) * (connect_timeout_s + 1.0) + 2.0)
    except Exception as exc:  # noqa: BLE001 - nats raises several unrelated types here
        raise errors.failure(exc, opts.url) from None
    nc.options["max_reconnect_attempts"] = -1 if reconnect else 0
    _denials[nc] = errors.denials
    return nc


def _nats_options(opts: ConnectOptions, name: str, reconnect: bool, initial_attempts: int,
                  connect_timeout_s: float) -> dict[str, Any]:
    """``nats.connect`` keyword arguments: servers, reconnecting, credentials and TLS."""
    return {
        "servers": [u.strip() for u in opts.url.split(",")],
        "inbox_prefix": opts.subjects.inbox_prefix,
        "name": name,
        "connect_timeout": connect_timeout_s,
        "allow_reconnect": reconnect,
        # nats-py retries the first connect as often as it reconnects; bound the first
        # connect so a wrong URL fails fast, then reconnect forever once connected.
        "max_reconnect_attempts": max(1, initial_attempts),
        "reconnect_time_wait": 0.5,
        "ping_interval": opts.ping_interval_s,
        "max_outstanding_pings": MAX_OUTSTANDING_PINGS,
        "user_credentials": opts.creds_file,
        "nkeys_seed": opts.nkey_seed_file,
        "user": opts.user,
        "password": opts.password,
        "token": opts.token,
        "tls": _tls(opts),
    }


class _ErrorLog:
    """What NATS reported on a connection (its ``error_cb``): the last errors while connecting,
    a failed TLS handshake, and the permissions violations that ``denied`` reads.

    Bounded: the callback lives as long as the connection, and nats-py calls it on every
    failed reconnect."""

    def __init__(self) -> None:
        self.refused: collections.deque[Exception] = collections.deque(maxlen=1)
        self.seen: collections.deque[Exception] = collections.deque(maxlen=1)
        self.denials: collections.deque[str] = collections.deque(maxlen=20)
        self.tls_failed = asyncio.Event()

    async def note(self, exc: Exception) -> None:
        self.seen.append(exc)
        if isinstance(exc, ssl.SSLError):
            self.tls_failed.set()
        if isinstance(exc, AuthorizationError) or "authoriz" in str(exc).lower():
            self.refused.append(exc)
        elif "permissions violation" in str(exc).lower():  # nats-py lowercases it
            self.denials.append(str(exc).lower())
            log.debug("NATS refused an operation: %s", exc)  # callers say what it means

    def failure(self, exc: Exception, url: str) -> NotConnected:
        """What to raise when the first connect to ``url`` ended with ``exc``."""
        if isinstance(exc, TimeoutError) and self.seen:
            exc = self.seen[-1]
        if self.refused or isinstance(exc, AuthorizationError):
            return NotAuthorized(
                f"NATS at {url} refused this login ({self.refused[-1] if self.refused else exc}); "
                "check --creds / --nkey / --user and --password / --token (or their "
                "FLOWFORGE_* variables)"
            )
        reason = str(exc) or type(exc).__name__
        return NotConnected(f"cannot reach NATS at {url}: {reason}; start one with "
                            "`flowforge-coordinator` (it embeds one) or `flowforge dev`")


async def _connect_or_tls_failure(kwargs: dict[str, Any], tls_failed: asyncio.Event,
                                  limit_s: float) -> NATS:
    """``nats.connect``, ended by a failed TLS handshake (nats-py then hangs) or ``limit_s``."""
    connecting = asyncio.ensure_future(nats.connect(**kwargs))
    failed = asyncio.ensure_future(tls_failed.wait())
    try:
        await asyncio.wait({connecting, failed}, timeout=limit_s,
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        failed.cancel()
    if not connecting.done():
        connecting.cancel()
        with contextlib.suppress(BaseException):
            await connecting
        raise TimeoutError("no connection")
    return connecting.result()


_denials: "weakref.WeakKeyDictionary[NATS, collections.deque[str]]" = weakref.WeakKeyDictionary()


def denied(nc: NATS, subject_part: str = "") -> str | None:
    """The newest permissions violation NATS reported on ``nc`` (naming ``subject_part``), if
    any: a request that was refused is dropped by the server and only times out."""
    part = subject_part.lower()
    for text in reversed(_denials.get(nc, ())):
        if part in text:
            return text
    return None
