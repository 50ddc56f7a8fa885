"""``--pool process``: sync tasks in worker processes that are killed at their deadline."""

import asyncio
import contextlib
import os
import sys
from typing import Any

import msgspec

from agent.procworker import AWAIT_CHILDREN, Call, Line
from flowforge.context import TaskContext
from protocol.api import API_REQUESTS
from protocol.children import AwaitChildren
from protocol.errors import FlowForgeError
from protocol.experiments import Logged
from protocol.untrusted import decode

_decode_line = msgspec.json.Decoder(Line).decode
_encode = msgspec.json.Encoder().encode
_await_dec = msgspec.json.Decoder(AwaitChildren)
_logged_dec = msgspec.json.Decoder(Logged)


class TaskError(Exception):
    """The task raised in its worker process: carries the type name and traceback."""

    def __init__(self, error_type: str, message: str, tb: str) -> None:
        super().__init__(message)
        self.error_type, self.message, self.traceback = error_type, message, tb


class WorkerDied(Exception):
    """The worker process exited while running a task (e.g. it crashed or was OOM-killed)."""


class _Worker:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()


class ProcessPool:
    """Worker processes started on demand; each runs one task at a time and is reused."""

    def __init__(self, targets: tuple[str, ...]) -> None:
        self.targets = targets
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self.killed = 0

    async def _spawn(self) -> _Worker:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent.procworker", *self.targets,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
            limit=16 * 1024 * 1024,
        )
        worker = _Worker(proc)
        self._all.add(worker)
        return worker

    async def run(self, call: Call, ctx: TaskContext, timeout_s: float | None) -> bytes:
        """The task's output JSON; raises TaskError, WorkerDied or TimeoutError."""
        worker = self._idle.pop() if self._idle else await self._spawn()
        done = False
        try:
            async with asyncio.timeout(timeout_s):
                result = await self._exchange(worker, call, ctx)
            done = True
            return result
        finally:
            if done:
                self._idle.append(worker)
            else:  # timed out, cancelled or broken: the process goes
                self.killed += 1
                await self._discard(worker)

    async def _exchange(self, worker: _Worker, call: Call, ctx: TaskContext) -> bytes:
        proc = worker.proc
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(_encode(call) + b"\n")
        await proc.stdin.drain()
        while True:
            raw = await proc.stdout.readline()
            if not raw:
                code = await proc.wait()
                raise WorkerDied(f"the worker process exited with code {code} during the task")
            line = _decode_line(raw)
            match line.kind:
                case "progress":
                    ctx._sink(line.fraction, line.message)
                case "experiment":
                    ctx.experiment.merge(decode(_logged_dec, bytes(line.output), "metrics"))
                case "log":
                    ctx.experiment.on_error(line.message or "")
                case "ask":  # the task asks the coordinator: answered on its input
                    proc.stdin.write(_encode(await _answer(ctx, line)) + b"\n")
                    await proc.stdin.drain()
                case "ok":
                    return bytes(line.output)
                case _:
                    raise TaskError(line.error_type or "Error", line.message or "",
                                    line.traceback or "")

    async def _discard(self, worker: _Worker) -> None:
        worker.kill()
        self._all.discard(worker)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(worker.proc.wait(), 5)

    async def close(self) -> None:
        for worker in list(self._all):
            if worker.proc.stdin is not None:
                worker.proc.stdin.close()
        for worker in list(self._all):
            try:
                await asyncio.wait_for(worker.proc.wait(), 2)
            except TimeoutError:
                worker.kill()
        self._all.clear()
        self._idle.clear()


async def _answer(ctx: TaskContext, line: Line) -> Line:
    """The coordinator's answer to a worker's question, over the agent's connection."""
    try:
        if line.message == AWAIT_CHILDREN:  # waited for here, lending the task's slot
            body = decode(_await_dec, bytes(line.output), "a worker's wait")
            await ctx._need_asker().await_children(body)
            return Line(kind="answer")
        noun, _, verb = (line.message or "").partition(".")
        request_type = API_REQUESTS[(noun, verb)]
        body = decode(msgspec.json.Decoder(request_type), bytes(line.output), "a worker's request")
        answer = await ctx._need_asker().aask(body, msgspec.Raw)
    except (FlowForgeError, KeyError, RuntimeError) as exc:
        code = exc.code if isinstance(exc, FlowForgeError) else "bad_request"
        return Line(kind="error", error_type=str(code), message=str(exc))
    return Line(kind="answer", output=answer)


def call_for(function: str, kwargs: dict[str, Any], ctx: TaskContext) -> Call:
    """A Call with the ctx parameter left out of kwargs and named instead."""
    ctx_param = next((k for k, v in kwargs.items() if v is ctx), None)
    return Call(
        function=function, kwargs={k: v for k, v in kwargs.items() if v is not ctx},
        ctx_param=ctx_param, run_id=ctx.run_id, flow=ctx.flow, task=ctx.task,
        attempt=ctx.attempt, params=ctx.params, agent_id=ctx.agent_id, queue=ctx.queue,
        scheduled_for=None if ctx.scheduled_for is None else ctx.scheduled_for.timestamp(),
        max_metric_points=ctx.experiment.max_points,
    )
