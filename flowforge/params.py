"""Run parameters from the command line: ``key=value`` with JSON values."""

import argparse
import json
from typing import Any


def parse_param(text: str) -> tuple[str, Any]:
    """``key=value``; the value is read as JSON when it parses (500, true, [1]) else as text."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--param {text!r} is not key=value")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw
