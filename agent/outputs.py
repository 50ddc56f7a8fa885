"""What a task gives back: its output as bounded JSON, or its traceback without our frames."""

import asyncio
import concurrent.futures
import os
import traceback
from typing import Any

import msgspec

from protocol.limits import MAX_OUTPUT_BYTES, MAX_VALUE_DEPTH
from protocol.untrusted import json_depth_over

_encode = msgspec.json.Encoder().encode


class OutputError(ValueError):
    """The task's return value cannot be stored: not JSON-serialisable, or too big."""


def encode_output(value: Any) -> bytes:
    """JSON of a task's return value, or an OutputError that says what to do instead."""
    try:
        data = _encode(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise OutputError(
            f"the task returned a {type(value).__name__}, which is not JSON-serialisable "
            f"({exc}); return plain JSON values (numbers, strings, lists, dicts) and store "
            "big objects such as DataFrames or models in a file or database, returning a "
            "reference (a path or key) instead"
        ) from None
    if json_depth_over(data, MAX_VALUE_DEPTH):
        raise OutputError(
            f"the task's output nests lists and dicts more than {MAX_VALUE_DEPTH} levels deep; "
            "return a flatter value"
        )
    if len(data) > MAX_OUTPUT_BYTES:
        raise OutputError(
            f"the task's output is {len(data):,} bytes of JSON, over the limit of "
            f"{MAX_OUTPUT_BYTES:,}; store it in a file or database and return a reference "
            "(a path or key) instead"
        )
    return data


_OUR_FRAMES = (
    os.path.dirname(__file__),
    os.path.dirname(asyncio.__file__),
    os.path.dirname(concurrent.futures.__file__),
)


def user_traceback(exc: BaseException) -> str:
    """The traceback from the task function down, without the agent's own frames."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_OUR_FRAMES):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))
