"""RunScreen: one run's DAG coloured by task state, with the selected task instance in full; a
mapped task's box counts its instances by state, a task's box its children (on its top edge), and
enter lists them (failed first)."""

from rich.console import Group, RenderableType
from rich.style import Style
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from flowforge.terminal import safe
from protocol.errors import FlowForgeError
from protocol.flows import FlowSpec
from protocol.records import TaskRecord
from protocol.states import TaskStatus
from tui import describe, map_rows, palette
from tui.banner import Banner
from tui.child_watch import RunChildren
from tui.children_view import ChildrenScreen
from tui.dag_shape import group_status
from tui.dag_view import DagView
from tui.forms import TextScreen
from tui.hub import fetch_log, hub_of
from tui.instances_view import InstancesScreen
from tui.map_rows import PANEL_ROWS, MapShown
from tui.map_watch import Throttle, try_fetch
from tui.model import Dirty


class RunScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("c", "cancel", "Cancel run"),
        Binding("y", "retry", "Retry failed"),
        Binding("m", "mark", "Mark task"),
        Binding("o", "output", "Full output"),
        Binding("g", "log", "Full log"),
        Binding("t", "trigger", "Run again"),
        Binding("enter", "instances", "Instances", show=False),
        Binding("k", "children", "Children"),
    ]

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id
        self.spec: FlowSpec | None = None
        self.dag_view = DagView(id="run-dag", empty="loading the flow definition…")
        self.mapped: list[str] = []
        """The flow's mapped tasks."""
        self.maps: dict[str, MapShown] = {}
        """Each mapped task's instances as last fetched."""
        self._basis: dict[str, TaskRecord] = {}
        """Each mapped task's record when its instances were last asked for."""
        self.throttle = Throttle(self, self.load_maps, group="run-maps")
        self.kids = RunChildren(self, run_id, lambda: self.dag_view.selected, self.draw)
        """The run's children: each task's counted, the selected task's first listed."""

    def compose(self) -> ComposeResult:
        yield Banner(id="banner")
        with Vertical(id="run-main"):
            yield Static(f"run {self.run_id}: loading…", id="run-head")
            yield Static(palette.legend(), id="legend")
            yield self.dag_view
            with VerticalScroll(id="run-task-scroll"):
                yield Static("", id="run-task")
        yield Footer()

    def on_mount(self) -> None:
        hub = hub_of(self)
        hub.model.pinned.add(self.run_id)
        hub.changed.subscribe(self, self.on_changed)
        self.query_one("#run-dag", DagView).focus()
        self.load()

    def on_unmount(self) -> None:
        hub_of(self).model.pinned.discard(self.run_id)
        hub_of(self).model.unfollow_logs(self.run_id)

    @work(exclusive=True, group="run-detail")
    async def load(self) -> None:
        hub = hub_of(self)
        head = self.query_one("#run-head", Static)
        dag_view = self.query_one("#run-dag", DagView)
        since = hub.model.seq
        try:
            detail = await hub.source.get(self.run_id)
        except FlowForgeError as exc:
            if self.run_id not in hub.model.runs:
                head.update(Text(safe(f"run {self.run_id}: {exc}")))
                return
        else:
            hub.model.set_detail(detail, since)
        run = hub.model.runs[self.run_id]
        found = await hub.flow_spec(run.flow, run.version)
        if found is not None:
            self.spec = found[0]
            self.mapped = [t.name for t in self.spec.tasks if t.map_over]
            dag_view.show_flow(
                *found, box_style=self.box_style, glyph=self.glyph, progress=self.progress,
                caption=self.caption, badge=self.kids.badge, keep_selection=False)
        self.draw()
        self.throttle.poke(at_once=True)
        self.kids.throttle.poke(at_once=True)

    def status_of(self, name: str) -> TaskStatus:
        """A task's state, or for a collapsed group the state that stands for its tasks'."""
        tasks = hub_of(self).model.tasks.get(self.run_id, {})
        members = self.dag_view.members.get(name)
        if members is not None:
            return group_status(tasks[m].status if m in tasks else TaskStatus.PENDING
                                for m in members)
        rec = tasks.get(name)
        return rec.status if rec else TaskStatus.PENDING

    def box_style(self, name: str) -> Style:
        return palette.task_style(self.status_of(name))

    def glyph(self, name: str) -> str:
        return palette.TASK_GLYPH[self.status_of(name)]

    def progress(self, name: str) -> float | None:
        """How far a running task says it is (drawn in its box), else None."""
        rec = hub_of(self).model.tasks.get(self.run_id, {}).get(name)
        return rec.progress if rec and rec.status is TaskStatus.RUNNING else None

    def caption(self, name: str, width: int) -> str:
        """A mapped task's box: its instances counted by state (``37/100 ✓35 ✗2 ▶3``)."""
        shown = self.maps.get(name)
        if shown is not None:
            return map_rows.caption(shown.counts, shown.total, width)
        rec = hub_of(self).model.tasks.get(self.run_id, {}).get(name)
        if rec is not None and rec.attempt:
            return "counting…"
        task = next((t for t in self.spec.tasks if t.name == name), None) if self.spec else None
        return f"over {task.map_over}" if task is not None else ""

    async def load_maps(self) -> None:
        """Fetch the instances of each mapped task that started and changed since they were
        last fetched: the counts, and for the selected one the first (failed first)."""
        hub = hub_of(self)
        selected = self.dag_view.selected
        for name in self.mapped:
            rec = hub.model.tasks.get(self.run_id, {}).get(name)
            old = self.maps.get(name)
            listing = name == selected
            if rec is None or not rec.attempt or (
                    rec is self._basis.get(name) and old is not None and (old.listed or not listing)):
                continue
            self._basis[name] = rec
            self.maps[name] = await try_fetch(hub.source, self.run_id, name,
                                              PANEL_ROWS if listing else 0, old)
        if self.is_attached:
            self.draw()

    def on_changed(self, dirty: Dirty) -> None:
        if self.spec is None and "link" in dirty.kinds:
            self.load()  # opened before the deployment answered: try again now that it does
        if self.run_id in dirty.runs or "tick" in dirty.kinds:
            self.draw()
        if self.run_id in dirty.runs:
            tasks = hub_of(self).model.tasks.get(self.run_id, {})
            if any((rec := tasks.get(name)) is not None and rec.attempt
                   and rec is not self._basis.get(name) for name in self.mapped):
                self.throttle.poke()  # its instances moved on
        self.kids.on_changed(dirty)

    def draw(self) -> None:
        hub = hub_of(self)
        run = hub.model.runs.get(self.run_id)
        if run is None:
            return
        for head in self.query("#run-head").results(Static):
            head.update(describe.run_header(run, hub.clock()))
        for dag_view in self.query("#run-dag").results(DagView):
            dag_view.restyle()
            self.show_task(dag_view.selected)

    @on(DagView.Selected, "#run-dag")
    def task_selected(self, event: DagView.Selected) -> None:
        self.show_task(event.name)
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """``k`` (children) is offered only on a task that has some."""
        return action != "children" or self.kids.has_children(self.dag_view.selected)

    def show_task(self, name: str | None) -> None:
        hub = hub_of(self)
        run = hub.model.runs.get(self.run_id)
        text: RenderableType = ""
        members = self.dag_view.members.get(name or "")
        if run is not None and members is not None and name is not None:
            tasks = hub.model.tasks.get(self.run_id, {})
            text = describe.run_group(name, self.status_of(name),
                                      [(m, tasks[m].status if m in tasks else TaskStatus.PENDING)
                                       for m in members])
        elif run is not None and name is not None:
            rec = hub.model.tasks.get(self.run_id, {}).get(name)
            buffer, new = hub.model.follow_log(self.run_id, name)
            if new:
                self.load_log(name)
            log = buffer.text if buffer.loaded else None
            text = describe.run_task(run, self.spec, rec, name, hub.clock(), log)
            if name in self.mapped:
                text = Group(text, map_rows.mapped_panel(self.maps.get(name)))
                shown = self.maps.get(name)
                if rec is not None and rec.attempt and (shown is None or not shown.listed):
                    self.throttle.poke(at_once=True)  # its first instances, failed first
            elif (kids := self.kids.panel(name)) is not None:
                text = Group(text, kids)
        for panel in self.query("#run-task").results(Static):  # none while the screen closes
            panel.update(text)

    @work(group="run-log")
    async def load_log(self, name: str) -> None:
        """Fetch the stored log of a task; log events that come meanwhile are added after it."""
        if await fetch_log(hub_of(self), self.run_id, name):
            self.draw()

    @property
    def task_name(self) -> str | None:
        return self.query_one("#run-dag", DagView).selected

    def action_back(self) -> None:
        self.dismiss(None)

    def action_cancel(self) -> None:
        hub_of(self).operator.cancel(self.run_id)

    def action_retry(self) -> None:
        hub_of(self).operator.retry(self.run_id)

    def action_mark(self) -> None:
        if self.task_name is not None:
            hub_of(self).operator.mark(self.run_id, self.task_name)

    def action_trigger(self) -> None:
        run = hub_of(self).model.runs.get(self.run_id)
        if run is not None:
            hub_of(self).operator.trigger(run.flow)

    def action_instances(self) -> None:
        """A mapped task's instances, or a task's children, failed first."""
        name = self.task_name
        if name is not None and name in self.mapped:
            self.app.push_screen(InstancesScreen(self.run_id, name, self.spec))
        elif name is not None and self.kids.has_children(name):
            self.app.push_screen(ChildrenScreen(self.run_id, name))
        elif name is not None:
            self.app.notify(safe(f"{name} has no instances or children"), markup=False)

    def action_children(self) -> None:
        """The selected task's child tasks, failed first."""
        name = self.task_name
        if name is not None and self.kids.has_children(name):
            self.app.push_screen(ChildrenScreen(self.run_id, name))
        elif name is not None:
            self.app.notify(safe(f"{name} has no children"), markup=False)

    def action_output(self) -> None:
        name = self.task_name
        rec = hub_of(self).model.tasks.get(self.run_id, {}).get(name or "")
        if rec is None:
            return
        text = describe.pretty_output(rec)
        if rec.traceback:
            text += f"\n\n{rec.error_type}: {rec.error_message}\n{rec.traceback}"
        self.app.push_screen(TextScreen(f"{name} of run {self.run_id}", text))

    def action_log(self) -> None:
        name = self.task_name
        buffer = hub_of(self).model.logs.get((self.run_id, name or ""))
        if name is None or buffer is None or not buffer.loaded:
            return
        self.app.push_screen(TextScreen(f"log of {name} in run {self.run_id}",
                                        buffer.text or "(nothing logged or printed)"))
