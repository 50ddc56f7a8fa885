"""Credential files checked before they reach nats-py, which reads them on the event loop's
thread: a ``.creds`` file without its JWT marker made it loop forever, an empty one failed
as ``object of type 'NoneType' has no len()``. Each problem is one line naming the file."""

import os
import re

import nkeys

from protocol.errors import NotConnected

MAX_FILE_BYTES = 64 * 1024
_JWT = re.compile(rb"^-+BEGIN NATS USER JWT-+\n([A-Za-z0-9_=-]+\.[A-Za-z0-9_=-]+\.[A-Za-z0-9_=-]+)\n",
                  re.MULTILINE)
_SEED = re.compile(rb"^-+BEGIN USER NKEY SEED-+\n(S[A-Z2-7]+)\n", re.MULTILINE)


def _read(flag: str, path: str) -> bytes:
    if not os.path.isfile(path):
        raise NotConnected(f"{flag} {path}: no such file")
    try:
        with open(path, "rb") as f:
            return f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise NotConnected(f"{flag} {path}: cannot read it ({exc.strerror})") from None


def _seed_ok(seed: bytes) -> bool:
    try:
        nkeys.from_seed(bytearray(seed)).wipe()
    except Exception:  # noqa: BLE001 - nkeys raises several types for a bad seed
        return False
    return True


def check_creds_file(path: str) -> None:
    """A user JWT and its nkey seed, as ``nsc generate creds`` writes them."""
    data = _read("--creds", path)
    jwt, seed = _JWT.search(data), _SEED.search(data)
    if len(data) > MAX_FILE_BYTES or jwt is None or seed is None or not _seed_ok(seed[1]):
        raise NotConnected(
            f"--creds {path}: not a NATS credentials file (it needs a user JWT after "
            "'-----BEGIN NATS USER JWT-----' and a user seed after "
            "'-----BEGIN USER NKEY SEED-----', each on the next line)")


def check_nkey_file(path: str) -> None:
    """One nkey seed (``SU...``), as ``nk -gen user`` or ``flowforge auth init`` write it."""
    data = _read("--nkey", path)
    if len(data) > MAX_FILE_BYTES or not _seed_ok(data.strip()):
        raise NotConnected(f"--nkey {path}: not an nkey seed file (one line starting 'SU', "
                           "as `flowforge auth init` writes NAME.nk)")
