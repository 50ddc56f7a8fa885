"""ResultSender: task results to JetStream, those that finish together in one message.

A result is sent at the next turn of the event loop; every result that finished in the
same turn goes with it, as one ``TaskResults`` message (up to ``max_bytes``): one store and
one ack instead of one per task, for the agent, the server and the coordinator. A lone
result goes as itself, so at light load nothing changes and nothing waits longer.
"""

import asyncio
from typing import Any

from flowforge.jspub import JsPublisher
from protocol.messages import TaskFailed, TaskSucceeded, encoder
from protocol.subjects import Subjects

Result = TaskSucceeded | TaskFailed
_Waiting = tuple[Result, bytes, asyncio.Future[None]]


class ResultSender:
    def __init__(self, jspub: JsPublisher, subjects: Subjects, max_bytes: int) -> None:
        self._jspub = jspub
        self._s = subjects
        self._max_bytes = max_bytes
        self._waiting: list[_Waiting] = []
        self._due = False
        self._sending: set[asyncio.Task[None]] = set()
        self.messages = 0
        """Messages sent (each holding one result or several)."""

    def send(self, result: Result) -> asyncio.Future[None]:
        """Queue ``result`` for the next turn; the future resolves once JetStream stored it
        (or fails with the publish error, for the caller to retry)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._waiting.append((result, encoder.encode(result), future))
        if not self._due:
            self._due = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._due = False
        waiting, self._waiting = self._waiting, []
        for group in _groups(waiting, self._max_bytes):
            task = asyncio.ensure_future(self._store(group))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _store(self, group: list[_Waiting]) -> None:
        try:
            subject, data = self._message(group)
            self.messages += 1
            await (await self._jspub.publish(subject, data))
        except Exception as exc:  # noqa: BLE001 - each sender retries its own result
            for _, _, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        for _, _, future in group:
            if not future.done():
                future.set_result(None)

    def _message(self, group: list[_Waiting]) -> tuple[str, bytes]:
        first = group[0][0]
        if len(group) == 1:
            return self._s.report(first.run_id), group[0][1]
        runs = {result.run_id for result, _, _ in group}
        subject = self._s.report(first.run_id) if len(runs) == 1 else self._s.report_several
        return subject, b'{"kind":"results.v1","results":[' + b",".join(
            data for _, data, _ in group) + b"]}"


def _groups(waiting: list[_Waiting], max_bytes: int) -> list[list[_Waiting]]:
    """Consecutive results in groups of at most ``max_bytes`` (one larger result alone)."""
    groups: list[list[_Waiting]] = []
    size = 0
    for item in waiting:
        if not groups or size + len(item[1]) > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append(item)
        size += len(item[1]) + 1
    return groups


def result_message_limit(max_payload: Any) -> int:
    """How big a message of several results may grow: half the server's max_payload, at most
    512 KiB (results are at most MAX_OUTPUT_BYTES each, so one always fits alone)."""
    return max(64 * 1024, min(512 * 1024, int(max_payload or 0) // 2))
