"""Running one task attempt: bind, call (loop or thread pool), check the output, build the report."""

import asyncio
import concurrent.futures
import functools
import os
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import msgspec

from agent.binding import BindError, BindPlan
from flowforge.context import TaskContext
from protocol.limits import MAX_OUTPUT_BYTES, cut_traceback
from protocol.messages import TaskDispatch, TaskFailed, TaskSucceeded

_encode = msgspec.json.Encoder().encode


class TaskTimeout(Exception):
    """The task ran past its ``timeout``."""


class OutputError(ValueError):
    """The task's return value cannot be stored: not JSON-serialisable, or too big."""


def encode_output(value: Any) -> bytes:
    """JSON of a task's return value, or a ValueError that says what to do instead."""
    try:
        data = _encode(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise OutputError(
            f"the task returned a {type(value).__name__}, which is not JSON-serialisable "
            f"({exc}); return plain JSON values (numbers, strings, lists, dicts) and store "
            "big objects such as DataFrames or models in a file or database, returning a "
            "reference (a path or key) instead"
        ) from None
    if len(data) > MAX_OUTPUT_BYTES:
        raise OutputError(
            f"the task's output is {len(data):,} bytes of JSON, over the limit of "
            f"{MAX_OUTPUT_BYTES:,}; store it in a file or database and return a reference "
            "(a path or key) instead"
        )
    return data


async def execute(
    task: TaskDispatch,
    fn: Callable[..., Any],
    plan: BindPlan,
    ctx: TaskContext,
    pool: Executor,
    agent_id: str,
) -> TaskSucceeded | TaskFailed:
    """Run one attempt and return its terminal report; never raises for the task's own errors."""
    started = time.time()
    try:
        kwargs = plan.bind(task, ctx)
        if plan.is_async:
            result = await _with_timeout(fn(**kwargs), task.timeout_s)
        else:
            call = functools.partial(fn, **kwargs)
            result = await _with_timeout(
                asyncio.get_running_loop().run_in_executor(pool, call), task.timeout_s
            )
        output = encode_output(result)
    except asyncio.CancelledError:
        raise
    except BindError as exc:
        return _failed(task, agent_id, started, "BindError", str(exc), "")
    except TaskTimeout as exc:
        return _failed(task, agent_id, started, "TaskTimeout", str(exc), "")
    except OutputError as exc:
        return _failed(task, agent_id, started, "OutputError", str(exc), "")
    except BaseException as exc:  # noqa: BLE001 - a task's exception is data
        return _failed(task, agent_id, started, type(exc).__name__, str(exc), user_traceback(exc))
    return TaskSucceeded(
        run_id=task.run_id, task=task.task, attempt=task.attempt, agent_id=agent_id,
        at=time.time(), started_at=started, output=msgspec.Raw(output),
    )


_OUR_FRAMES = (os.path.dirname(__file__), os.path.dirname(asyncio.__file__),
               os.path.dirname(concurrent.futures.__file__))


def user_traceback(exc: BaseException) -> str:
    """The traceback from the task function down, without the agent's own frames."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_OUR_FRAMES):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))


async def _with_timeout(awaitable: Any, timeout_s: float | None) -> Any:
    if timeout_s is None:
        return await awaitable
    try:
        async with asyncio.timeout(timeout_s):
            return await awaitable
    except TimeoutError:
        raise TaskTimeout(f"the task ran longer than its timeout of {timeout_s:g} s") from None


def _failed(
    task: TaskDispatch, agent_id: str, started: float, error_type: str, message: str, tb: str
) -> TaskFailed:
    return TaskFailed(
        run_id=task.run_id, task=task.task, attempt=task.attempt, agent_id=agent_id,
        at=time.time(), started_at=started, error_type=error_type, message=message,
        traceback=cut_traceback(tb),
    )
