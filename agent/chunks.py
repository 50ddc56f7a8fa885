"""A chunk of a mapped task's items in one task message: the function once per item, in
order, and one report whose output lists how each item went."""

import time
from collections.abc import Awaitable, Callable

import msgspec

from protocol.limits import MAX_OUTPUT_BYTES, MAX_VALUE_DEPTH
from protocol.messages import ItemResult, TaskDispatch, TaskFailed, TaskSucceeded
from protocol.untrusted import json_depth_over

MAX_CHUNK_OUTPUT_BYTES = 3 * MAX_OUTPUT_BYTES
"""The outputs of one chunk together (a bigger chunk fails as a whole: use a smaller one);
with the report around them, under a stock nats-server's 1 MB max_payload."""
ITEM_DEPTH = MAX_VALUE_DEPTH - 2
"""An item's output sits two levels down in the chunk's report (a list of results)."""
_enc = msgspec.json.Encoder()

RunOne = Callable[[TaskDispatch], Awaitable[TaskSucceeded | TaskFailed]]


def one_item(task: TaskDispatch, offset: int) -> TaskDispatch:
    """The task message of the chunk's item at ``offset``, as if it came alone."""
    assert task.chunk is not None
    inputs = {**task.inputs, "item": task.chunk[offset],
              "map_index": msgspec.Raw(str(task.first_index + offset).encode())}
    return msgspec.structs.replace(task, inputs=inputs, chunk=None)


async def run_chunk(task: TaskDispatch, run_one: RunOne, agent_id: str,
                    cancelled: Callable[[], bool]) -> TaskSucceeded | TaskFailed:
    """Each item in turn (a cancelled run stops between items); the chunk's report."""
    assert task.chunk is not None
    started = time.time()
    results: list[bytes] = []
    size = 2
    for offset in range(len(task.chunk)):
        if cancelled():
            return _failed(task, agent_id, started, "Cancelled", "the run was cancelled")
        report = await run_one(one_item(task, offset))
        if isinstance(report, TaskSucceeded) and json_depth_over(bytes(report.output), ITEM_DEPTH):
            result = ItemResult(ok=False, error_type="OutputError", message=(
                f"the item's output nests lists and dicts more than {ITEM_DEPTH} levels deep "
                "(in a chunk); return a flatter value"))
        elif isinstance(report, TaskSucceeded):
            result = ItemResult(ok=True, output=report.output)
        else:
            result = ItemResult(ok=False, error_type=report.error_type, message=report.message,
                                traceback=report.traceback)
        results.append(_enc.encode(result))
        size += len(results[-1]) + 1
        if size > MAX_CHUNK_OUTPUT_BYTES:
            return _failed(task, agent_id, started, "OutputError",
                           f"the outputs of this chunk's items add up to over "
                           f"{MAX_CHUNK_OUTPUT_BYTES:,} bytes; use a smaller chunk, or return "
                           "references instead of data")
    return TaskSucceeded(run_id=task.run_id, task=task.task, attempt=task.attempt,
                         agent_id=agent_id, at=time.time(), started_at=started,
                         output=msgspec.Raw(b"[" + b",".join(results) + b"]"))


def _failed(task: TaskDispatch, agent_id: str, started: float, error_type: str,
            message: str) -> TaskFailed:
    return TaskFailed(run_id=task.run_id, task=task.task, attempt=task.attempt,
                      agent_id=agent_id, at=time.time(), started_at=started,
                      error_type=error_type, message=message)
