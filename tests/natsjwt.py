"""A NATS operator, its accounts and a user, made here as JWTs signed with nkeys: what
``nsc`` writes for a decentralised-auth server, enough to test ``--creds`` against a real one."""

import base64
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys

UNLIMITED = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
             "wildcards": True, "conn": -1, "leaf": -1}
JETSTREAM = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _keypair(prefix: int) -> tuple[nkeys.KeyPair, str]:
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    pair = nkeys.from_seed(seed)
    return pair, seed.decode()


def _public(pair: nkeys.KeyPair) -> str:
    return pair.public_key.decode()


def _jwt(subject: str, name: str, nats: dict[str, Any], signer: nkeys.KeyPair) -> str:
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    claims = _b64(json.dumps({"jti": os.urandom(8).hex(), "iat": int(time.time()),
                              "iss": _public(signer), "name": name, "sub": subject,
                              "nats": {**nats, "version": 2}}).encode())
    signature = signer.sign(f"{header}.{claims}".encode())
    return f"{header}.{claims}.{_b64(signature)}"


@dataclass(frozen=True)
class Operator:
    """An operator with a system account and one JetStream-enabled account of users."""

    server_conf: str
    """The config lines for nats-server: the operator, the system account, the accounts."""
    account: nkeys.KeyPair

    def creds(self, path: Path, name: str = "user", signer: nkeys.KeyPair | None = None) -> Path:
        """A ``.creds`` file for a new user, signed by the account (or by ``signer``)."""
        user, seed = _keypair(nkeys.PREFIX_BYTE_USER)
        token = _jwt(_public(user), name, {"type": "user", "pub": {}, "sub": {}, "subs": -1,
                                           "data": -1, "payload": -1},
                     signer or self.account)
        path.write_text(f"-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n"
                        f"-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n")
        return path


def make_operator() -> Operator:
    operator, _ = _keypair(nkeys.PREFIX_BYTE_OPERATOR)
    system, _ = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    account, _ = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    op_jwt = _jwt(_public(operator), "operator", {"type": "operator"}, operator)
    sys_jwt = _jwt(_public(system), "SYS", {"type": "account", "limits": UNLIMITED}, operator)
    acc_jwt = _jwt(_public(account), "flowforge",
                   {"type": "account", "limits": {**UNLIMITED, **JETSTREAM}}, operator)
    conf = (f"operator: {op_jwt}\nsystem_account: {_public(system)}\nresolver: MEMORY\n"
            f"resolver_preload: {{\n  {_public(system)}: {sys_jwt}\n"
            f"  {_public(account)}: {acc_jwt}\n}}\n")
    return Operator(conf, account)


def stranger_account() -> nkeys.KeyPair:
    """An account no server was told about: users it signs are refused."""
    return _keypair(nkeys.PREFIX_BYTE_ACCOUNT)[0]
