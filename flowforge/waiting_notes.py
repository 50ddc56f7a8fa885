"""Why a run waits, said once: the ``waiting: …`` notes the coordinator puts on tasks that
cannot start (no agent on their queue, a full limit), for ``run --wait`` and
``batch submit --wait``."""

import contextlib
import sys
import time
from collections.abc import Iterable
from typing import Any

from flowforge.terminal import out
from protocol.batches import ITEM_ACTIVE, BatchRecord
from protocol.errors import FlowForgeError
from protocol.records import RunDetail

QUIET_S = 2.0
"""A batch whose done count has not moved for this long is asked why its runs wait; after
each look the next one comes twice as late, up to QUIET_MAX_S, until something ends."""
QUIET_MAX_S = 60.0
RUNS_ASKED = 3
"""Active runs of a batch looked at each time."""


def new_notes(details: Iterable[RunDetail], said: set[str]) -> list[str]:
    """Each waiting note not said yet, with the tasks it holds (e.g. ``waiting: no agent on
    queue gpu (train_model)``); the notes are added to ``said``."""
    why: dict[str, list[str]] = {}
    for detail in details:
        for task in detail.tasks:
            if task.note and task.note.startswith("waiting:") and task.note not in said:
                why.setdefault(task.note, []).append(task.task)
    lines = []
    for note, tasks in why.items():
        said.add(note)
        shown = ", ".join(tasks[:5]) + (f" and {len(tasks) - 5} more" if len(tasks) > 5 else "")
        lines.append(f"{note} ({shown})")
    return lines


class BatchWaitNotes:
    """Called with the batch's record as ``wait_batch`` sees it: when nothing ended for
    QUIET_S, it looks at a few active runs and says why they wait, each reason once."""

    def __init__(self, client: Any, batch_id: str) -> None:
        self.client, self.batch_id = client, batch_id
        self.said: set[str] = set()
        self._done, self._since, self._quiet_s = -1, time.monotonic(), QUIET_S

    async def __call__(self, record: BatchRecord) -> None:
        done, now = record.done(), time.monotonic()
        if done != self._done:
            self._done, self._since, self._quiet_s = done, now, QUIET_S
            return
        if now - self._since < self._quiet_s:
            return
        self._since, self._quiet_s = now, min(QUIET_MAX_S, 2 * self._quiet_s)
        with contextlib.suppress(FlowForgeError, TimeoutError):  # a note is not worth failing
            for line in new_notes(await self._active_runs(), self.said):  # the wait for
                out(line, file=sys.stderr)

    async def _active_runs(self) -> list[RunDetail]:
        details = []
        for status in ITEM_ACTIVE:
            page = await self.client.batch(self.batch_id, items=RUNS_ASKED, status=status)
            for item in page.items:
                if item.run_id is not None:
                    details.append(await self.client.get(item.run_id))
        return details
