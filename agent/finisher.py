"""Finisher: the result path — a terminal report stored durably, then its task message acked."""

import asyncio
import logging

import msgspec

from agent.inhand import TaskInHand, TaskState
from agent.results import Result, ResultSender

log = logging.getLogger("flowforge.agent")

REPORT_RETRY_MAX_S = 5.0
"""The longest pause between two tries to store a report."""


class Finisher:
    """``finish(item, report)`` for a REPORTING task message; counts the tasks finished.

    The ack comes only after the reports stream stored the report, so a report lost with
    the agent means a redelivery, never a lost task. While the store is away the agent keeps
    trying (backing off up to REPORT_RETRY_MAX_S) and keeps extending the message's lease.
    """

    def __init__(self, results: ResultSender) -> None:
        self._results = results
        self.completed = 0
        """Task messages acked after their report was stored."""

    async def finish(self, item: TaskInHand, report: Result) -> None:
        """Store ``report`` durably, then ack the message (retrying while NATS is away)."""
        report = msgspec.structs.replace(report, delivery=item.delivery)
        delay = 0.1
        while True:
            try:
                await self._results.send(report)
                await item.msg.ack()
                item.move(TaskState.DONE)
                self.completed += 1
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep trying; the lease is extended
                log.warning("report for %s/%s not accepted yet (%r); retrying",
                            report.run_id, report.task, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, REPORT_RETRY_MAX_S)
