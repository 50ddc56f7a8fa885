"""Run parameters from the command line: ``key=value`` with JSON values."""

import argparse
import json
from typing import Any

from protocol.errors import FlowForgeError


def parse_param(text: str) -> tuple[str, Any]:
    """``key=value``; the value is read as JSON when it parses (500, true, [1]) else as text."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--param {text!r} is not key=value")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def params_from(json_text: str | None, flag: str, pairs: list[tuple[str, Any]] | None) -> dict[str, Any]:
    """A JSON object given with ``flag``, then ``--param`` pairs over it; FlowForgeError
    saying what is wrong."""
    params: dict[str, Any] = {}
    if json_text:
        try:
            params = json.loads(json_text)
        except json.JSONDecodeError as exc:
            raise FlowForgeError(f"{flag} is not valid JSON: {exc}") from None
        if not isinstance(params, dict):
            raise FlowForgeError(f"{flag} must be a JSON object")
    return {**params, **dict(pairs or [])}
