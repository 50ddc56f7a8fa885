"""A worker process for ``--pool process``: runs sync task functions, talks JSON lines on a pipe.

Started by the agent as ``python -m agent.procworker TARGET...``; it imports the same
modules as the agent and runs only functions they registered. Requests and results are
JSON (never pickled). The agent kills this process when a task times out or is cancelled.
"""

import os
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

import msgspec

from agent.outputs import OutputError, encode_output, user_traceback
from flowforge.context import TaskContext
from flowforge.experiment_log import ExperimentLog
from flowforge.loader import import_target
from flowforge.registry import REGISTRY
from protocol.errors import RemoteError
from protocol.experiments import DEFAULT_MAX_METRIC_POINTS
from protocol.untrusted import decode


class Call(msgspec.Struct, frozen=True, kw_only=True):
    """Run ``function`` with ``kwargs``; ``ctx_param`` names the parameter that gets ctx."""

    function: str
    kwargs: dict[str, Any]
    ctx_param: str | None = None
    run_id: str = ""
    flow: str = ""
    task: str = ""
    attempt: int = 0
    params: dict[str, Any] = {}
    agent_id: str = ""
    queue: str = "default"
    scheduled_for: float | None = None
    max_metric_points: int = DEFAULT_MAX_METRIC_POINTS


class Line(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One line back to the agent: progress, a question for the coordinator, or the result
    (and, to the worker, the answer to its question)."""

    kind: str
    """progress, ask (``message``: its ``noun.verb``, ``output``: the request), experiment
    (``output``: what the task logged, checked), log (``message``: an error line for the task's
    log), ok or error; to the worker: answer (``output``) or error."""
    fraction: float | None = None
    message: str | None = None
    output: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"null"))
    error_type: str | None = None
    traceback: str | None = None


_encode = msgspec.json.Encoder().encode
_decode_call = msgspec.json.Decoder(Call).decode
_decode_line = msgspec.json.Decoder(Line).decode


AWAIT_CHILDREN = "children.await"
"""A worker's ask that the agent answers itself: once the children are done."""


class WorkerAsker:
    """A task in this worker process asks the coordinator through the agent: the question
    goes out as a line, and the agent's answer comes back on the input before the next call.
    Waiting for children is asked the same way; the agent answers when they are done."""

    def __init__(self, send: Any, inp: Any) -> None:
        self._send, self._inp = send, inp

    def ask(self, body: Any, result_type: type[Any]) -> Any:
        from flowforge.client import route_of  # the SDK's client: only when a task asks

        self._send(Line(kind="ask", message=route_of(body), output=msgspec.Raw(_encode(body))))
        line = _decode_line(self._inp.readline())
        if line.kind != "answer":
            raise RemoteError(line.error_type or "internal", line.message or "no answer")
        return decode(msgspec.json.Decoder(result_type), bytes(line.output),
                      "the coordinator's answer")

    async def aask(self, body: Any, result_type: type[Any]) -> Any:
        raise RuntimeError("an async task runs in the agent's loop, not in a worker process")

    def wait_children(self, body: Any) -> None:
        self._send(Line(kind="ask", message=AWAIT_CHILDREN, output=msgspec.Raw(_encode(body))))
        line = _decode_line(self._inp.readline())
        if line.kind != "answer":
            raise RemoteError(line.error_type or "internal", line.message or "no answer")

    async def await_children(self, body: Any) -> None:
        raise RuntimeError("an async task runs in the agent's loop, not in a worker process")


def serve(out: Any, inp: Any) -> None:
    """Answer calls from ``inp`` until it closes."""
    lock = threading.Lock()  # a task's own threads may log metrics or progress at once

    def send(line: Line) -> None:
        data = _encode(line) + b"\n"
        with lock:
            out.write(data)
            out.flush()

    for raw in inp:
        call = _decode_call(raw)
        kwargs = dict(call.kwargs)
        ctx = None
        if call.ctx_param:
            ctx = kwargs[call.ctx_param] = TaskContext(
                run_id=call.run_id, flow=call.flow, task=call.task, attempt=call.attempt,
                params=call.params, agent_id=call.agent_id, scheduled_for=call.scheduled_for,
                sink=lambda f, m: send(Line(kind="progress", fraction=f, message=m)),
                asker=WorkerAsker(send, inp), queue=call.queue,
                max_metric_points=call.max_metric_points,
            )
            _send_experiment(ctx.experiment, send)
        send(_run(call.function, kwargs, ctx))


def _send_experiment(experiment: ExperimentLog, send: Callable[[Line], None]) -> None:
    """What the task logs goes to the agent as it is logged (checked here, so its error lines
    reach the task's log through the agent); the agent sends it on with its own."""
    experiment.on_error = lambda text: send(Line(kind="log", message=text))
    experiment.on_ready = lambda: send(Line(kind="experiment",
                                            output=msgspec.Raw(_encode(experiment.take()))))


def _run(function: str, kwargs: dict[str, Any], ctx: TaskContext | None) -> Line:
    fn = REGISTRY.functions.get(function)
    if fn is None:
        return Line(kind="error", error_type="UnknownFunction",
                    message=f"no function {function!r} in this worker process")
    try:
        output = encode_output(fn(**kwargs))
        if ctx is not None and ctx._spawner is not None and ctx._spawner.unsettled:
            ctx._spawner.settle()  # it ends after its children
        return Line(kind="ok", output=msgspec.Raw(output))
    except OutputError as exc:
        return Line(kind="error", error_type="OutputError", message=str(exc))
    except BaseException as exc:  # noqa: BLE001 - a task's exception is data
        return Line(kind="error", error_type=type(exc).__name__, message=str(exc),
                    traceback=user_traceback(exc))


def main() -> int:
    protocol_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # print() in a task goes to stderr, not into the protocol pipe
    sys.stdout = sys.stderr
    try:
        for target in sys.argv[1:]:
            import_target(target)
    except Exception:  # noqa: BLE001 - report why, then exit
        traceback.print_exc()
        return 2
    serve(protocol_out, sys.stdin.buffer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
