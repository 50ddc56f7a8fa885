"""Operator: the dashboard's actions on a deployment — trigger, cancel, retry, mark, schedules and
batches — each confirmed."""

from collections.abc import Awaitable, Callable
from typing import Any

from textual.app import App

from flowforge.terminal import safe
from protocol.batches import BatchRecord, BatchState, ItemStatus
from protocol.errors import FlowForgeError
from protocol.records import RunRecord
from tui.forms import ConfirmScreen, MarkScreen, TriggerScreen
from tui.hub import Hub


class Operator:
    """Asks first (a form or a yes/no), then calls the source; the outcome shows as a toast."""

    def __init__(self, app: App[Any], hub: Hub, open_run: Callable[[str], None]) -> None:
        self.app = app
        self.hub = hub
        self.open_run = open_run
        """Navigation: show one run (the run view); a started run opens there."""

    def trigger(self, flow: str) -> None:
        self.app.run_worker(self._trigger(flow), group="operator")

    async def _trigger(self, flow: str) -> None:
        found = await self.hub.flow_spec(flow)
        spec = found[0] if found else None

        def started(run: RunRecord | None) -> None:
            if run is not None:
                self.app.notify(safe(f"run {run.run_id} of {flow} started"), markup=False)
                self.open_run(run.run_id)

        await self.app.push_screen(
            TriggerScreen(flow, spec, lambda params: self.hub.source.start(flow, params)), started)

    def cancel(self, run_id: str) -> None:
        self._confirm(f"Cancel run {run_id}? Pending tasks are cancelled, running ones told to stop.",
                      lambda: self.hub.source.cancel(run_id), f"run {run_id}: cancel requested")

    def retry(self, run_id: str) -> None:
        self._confirm(f"Retry the failed, cancelled and upstream-failed tasks of run {run_id}?",
                      lambda: self.hub.source.retry(run_id), f"run {run_id}: retrying")

    def mark(self, run_id: str, task: str) -> None:
        def chosen(answer: tuple[str, Any] | None) -> None:
            if answer is None:
                return
            status, output = answer
            self._confirm(f"Mark {task} of run {run_id} {status}? Its dependants follow.",
                          lambda: self.hub.source.mark(run_id, task, status, output),
                          f"{task} marked {status}")

        self.app.push_screen(MarkScreen(run_id, task), chosen)

    def toggle_schedule(self, name: str, paused: bool) -> None:
        if paused:
            self._confirm(f"Resume schedule {name}? It fires again from now; the times due "
                          "while it was paused stay skipped.",
                          lambda: self.hub.source.resume_schedule(name), f"{name} resumed")
        else:
            self._confirm(f"Pause schedule {name}? Nothing fires until it is resumed.",
                          lambda: self.hub.source.pause_schedule(name, "paused from the dashboard"),
                          f"{name} paused")

    def run_schedule(self, name: str) -> None:
        self._confirm(f"Start a run of schedule {name} now, outside its times?",
                      lambda: self.hub.source.trigger_schedule(name), f"{name}: run started")

    def toggle_batch(self, batch: BatchRecord) -> None:
        """Pause an active (or loading) batch, resume a paused one."""
        ref, name = batch.batch_id, batch.spec.name or batch.batch_id
        if batch.state is BatchState.PAUSED:
            self._confirm(f"Resume batch {name}? Its waiting items start again, at most "
                          f"{batch.spec.max_active:,} runs at once.",
                          lambda: self.hub.source.resume_batch(ref), f"batch {name} resumed")
            return
        active = sum(batch.counts.get(s, 0) for s in (ItemStatus.PENDING, ItemStatus.RUNNING))
        self._confirm(f"Pause batch {name}? No more of its items start until it is resumed; "
                      f"its {active:,} active runs go on.",
                      lambda: self.hub.source.pause_batch(ref, "paused from the dashboard"),
                      f"batch {name} paused")

    def cancel_batch(self, batch: BatchRecord) -> None:
        ref, name = batch.batch_id, batch.spec.name or batch.batch_id
        waiting = batch.counts.get(ItemStatus.WAITING, 0)
        active = sum(batch.counts.get(s, 0) for s in (ItemStatus.PENDING, ItemStatus.RUNNING))
        self._confirm(f"Cancel batch {name}? Its {waiting:,} waiting items never start and its "
                      f"{active:,} active runs are cancelled.",
                      lambda: self.hub.source.cancel_batch(ref), f"batch {name}: cancel requested")

    def _confirm(self, question: str, call: Callable[[], Awaitable[object]], done: str) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                self.app.run_worker(self._call(call, done), group="operator")

        self.app.push_screen(ConfirmScreen(question), answered)

    async def _call(self, call: Callable[[], Awaitable[object]], done: str) -> None:
        try:
            await call()
        except FlowForgeError as exc:
            self.app.notify(safe(str(exc)), title="refused", severity="error", timeout=8,
                            markup=False)
            return
        self.app.notify(safe(done), markup=False)
