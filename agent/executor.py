"""Running one task attempt: bind, call (loop, threads or processes), build the report."""

import asyncio
import contextvars
import functools
import inspect
import time
from collections.abc import Callable
from typing import Any

import msgspec

from agent import streams
from agent.binding import BindError, BindPlan
from agent.outputs import OutputError, encode_output, user_traceback
from agent.procpool import ProcessPool, TaskError, WorkerDied, call_for
from agent.threads import Outcome, TaskThreads
from flowforge.context import TaskContext
from protocol.limits import cut_traceback
from protocol.messages import TaskDispatch, TaskFailed, TaskSucceeded


class TaskTimeout(Exception):
    """The task ran past its ``timeout``."""


async def execute(
    task: TaskDispatch,
    fn: Callable[..., Any],
    plan: BindPlan,
    ctx: TaskContext,
    threads: TaskThreads,
    agent_id: str,
    processes: ProcessPool | None = None,
    lingering: list[asyncio.Future[Any]] | None = None,
    send_items: streams.SendItems | None = None,
) -> TaskSucceeded | TaskFailed:
    """Run one attempt and return its terminal report; never raises for the task's own errors.

    A sync task that timed out or was cancelled keeps running in its thread; its future is
    added to ``lingering`` so the caller can hold the slot until the thread returns.
    """
    started = time.time()
    fail = functools.partial(_failed, task, agent_id, started)
    try:
        kwargs = plan.bind(task, ctx)
        if plan.is_async:
            output = encode_output(await _with_timeout(fn(**kwargs), task.timeout_s))
        elif processes is not None and not _is_generator(fn):
            output = await _in_process(processes, task, kwargs, ctx)
        else:  # a generator task runs in a thread whatever the pool: it yields to the agent
            outcome = await _in_thread(threads, fn, kwargs, task.timeout_s, lingering)
            output = encode_output(await _with_timeout(  # a generator: all its items in time
                _drained(_unwrap(outcome), threads, send_items), task.timeout_s))
        spawner = ctx._spawner
        if spawner is not None and spawner.unsettled:  # it ends after its children
            await spawner.asettle()
    except asyncio.CancelledError:
        raise
    except BindError as exc:
        return fail("BindError", str(exc), "")
    except TaskTimeout as exc:
        return fail("TaskTimeout", str(exc), "")
    except OutputError as exc:
        return fail("OutputError", str(exc), "")
    except TaskError as exc:
        return fail(exc.error_type, exc.message, exc.traceback)
    except WorkerDied as exc:
        return fail("WorkerDied", str(exc), "")
    except BaseException as exc:  # noqa: BLE001 - a task's exception is data
        return fail(type(exc).__name__, str(exc), user_traceback(exc))
    return TaskSucceeded(
        run_id=task.run_id, task=task.task, attempt=task.attempt, agent_id=agent_id,
        at=time.time(), started_at=started, output=msgspec.Raw(output),
    )


async def _in_thread(
    threads: TaskThreads, fn: Callable[..., Any], kwargs: dict[str, Any], timeout_s: float | None,
    lingering: list[asyncio.Future[Any]] | None,
) -> Outcome:
    call = functools.partial(contextvars.copy_context().run, fn, **kwargs)  # keep the capture
    thread = threads.submit(call)
    try:
        return await _with_timeout(asyncio.shield(thread), timeout_s)
    except (TaskTimeout, asyncio.CancelledError):
        if lingering is not None:  # a thread cannot be stopped: its slot stays taken
            lingering.append(thread)
        raise


def _is_generator(fn: Callable[..., Any]) -> bool:
    return inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)


async def _drained(value: Any, threads: TaskThreads, send: streams.SendItems | None) -> Any:
    """A generator's items sent as they come (its value: how many); any other value as is."""
    if not (inspect.isgenerator(value) or inspect.isasyncgen(value)):
        return value
    if send is None:
        raise OutputError("the task is a generator, and nothing here takes its items")
    if inspect.isasyncgen(value):
        return await streams.drain_async(value, send)
    return await streams.drain(value, threads, send)


def _unwrap(outcome: Outcome) -> Any:
    """The call's value, or its exception raised here: from a plain function, so that a
    StopIteration reaches ``execute`` as itself (out of a coroutine it becomes RuntimeError)."""
    result, error = outcome
    if error is not None:
        raise error
    return result


async def _in_process(
    processes: ProcessPool, task: TaskDispatch, kwargs: dict[str, Any], ctx: TaskContext
) -> bytes:
    try:
        return await processes.run(call_for(task.function, kwargs, ctx), ctx, task.timeout_s)
    except TimeoutError:
        raise TaskTimeout(
            f"the task ran longer than its timeout of {task.timeout_s:g} s; "
            "its worker process was killed"
        ) from None


async def _with_timeout(awaitable: Any, timeout_s: float | None) -> Any:
    if timeout_s is None:
        return await awaitable
    try:
        async with asyncio.timeout(timeout_s):
            return await awaitable
    except TimeoutError:
        raise TaskTimeout(
            f"the task ran longer than its timeout of {timeout_s:g} s "
            "(a sync task in the thread pool keeps running until it returns; "
            "use --pool process to have it killed)"
        ) from None


def _failed(
    task: TaskDispatch, agent_id: str, started: float, error_type: str, message: str, tb: str
) -> TaskFailed:
    return TaskFailed(
        run_id=task.run_id, task=task.task, attempt=task.attempt, agent_id=agent_id,
        at=time.time(), started_at=started, error_type=error_type, message=message,
        traceback=cut_traceback(tb),
    )
