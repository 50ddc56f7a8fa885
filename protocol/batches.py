"""Batches: one flow over many parameter sets. Each item is keyed by the flow and the
canonical JSON of its parameters, so the same parameters are the same item in any batch and
an item that already succeeded is not run again. Pure: msgspec and the stdlib only."""

import hashlib
import math
from enum import StrEnum
from typing import Any

import msgspec

_canonical = msgspec.json.Encoder(order="deterministic")


class Reprocess(StrEnum):
    """Which items run again when their parameters were run before (in any batch)."""

    NONE = "none"
    """Only items never run, or whose runs did not finish: a second submit runs nothing new."""
    FAILED = "failed"
    """Also items whose last run failed or was cancelled."""
    ALL = "all"
    """Every item."""


def canonical(value: Any) -> Any:
    """The value as JSON sees it: a float with an integral value is that integer (1.0 is 1),
    so parameters written either way are the same item; dicts and lists all the way down."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("parameters must be finite numbers (no NaN or infinity)")
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    return value


def canonical_json(params: dict[str, Any]) -> bytes:
    """Sorted keys, no spaces, integral floats as integers."""
    return _canonical.encode(canonical(params))


def item_key(flow: str, params: dict[str, Any]) -> str:
    """The key of one item: the same for equal parameters (as JSON values) of one flow."""
    digest = hashlib.sha256(flow.encode() + b"\0" + canonical_json(params)).hexdigest()
    return f"item:{digest[:40]}"
