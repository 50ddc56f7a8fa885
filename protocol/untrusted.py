"""Decoding what comes off the bus: size and nesting limits first, then strict msgspec.

Every message is untrusted, whoever seems to have sent it. ``decode`` turns every way a
message can be unacceptable (too big, too deep, not JSON, wrong shape, out of range) into one
``Malformed`` error with a reason, so a handler has one thing to catch and set aside.
"""

import re
from typing import TypeVar

import msgspec

from protocol.errors import BadRequest, TooLarge
from protocol.limits import MAX_JSON_DEPTH

T = TypeVar("T")

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
"""A JSON string; one left open runs to the end. It matches from every quote it starts at,
so the scan is linear: a pattern that could fail there would rescan the rest of the message
from each quote (a 64 KB message of escaped quotes took 12 s)."""
_INNERMOST = re.compile(rb"\[\]|\{\}")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


class Malformed(BadRequest):
    """A message that cannot be accepted as it is; ``reason`` says why."""


def json_depth_over(data: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when the JSON in ``data`` nests objects and arrays more than ``limit`` deep.

    Cheap for ordinary messages (two counts); otherwise strings are removed, then innermost
    pairs of brackets, one level per pass, at most ``limit`` + 1 passes. Brackets that do not
    pair up (invalid JSON) may count as nesting: such a message is refused either way.
    """
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    for _ in range(limit):
        shorter = _INNERMOST.sub(b"", brackets)  # one level: pairs formed by this pass stay
        if not shorter:
            return False
        if len(shorter) == len(brackets):
            return True  # pairs that do not match: not JSON
        brackets = shorter
    return bool(brackets)


def check_depth(data: bytes, what: str, limit: int = MAX_JSON_DEPTH) -> None:
    if json_depth_over(data, limit):
        raise Malformed(f"invalid {what}: nests objects or arrays more than {limit} levels deep")


def decode(decoder: msgspec.json.Decoder[T], data: bytes, what: str,
           max_bytes: int | None = None) -> T:
    """``decoder.decode(data)`` behind the limits; any failure is ``Malformed`` (or
    ``TooLarge`` for size) naming ``what`` was being decoded."""
    if max_bytes is not None and len(data) > max_bytes:
        raise TooLarge(f"{what} is {len(data):,} bytes; the limit is {max_bytes:,}")
    check_depth(data, what)
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise Malformed(f"invalid {what}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise Malformed(f"invalid {what}: not valid JSON: {exc}") from None
    except RecursionError:  # deep in the caller's own stack: still refuse, never crash
        raise Malformed(f"invalid {what}: nests too deep to decode") from None
