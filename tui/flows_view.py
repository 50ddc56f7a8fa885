"""FlowsView: every registered flow; the selected one's DAG; the selected task's definition."""

from rich.console import RenderableType
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Static

from flowforge.terminal import safe
from protocol.flows import FlowSpec
from tui import describe, palette
from tui.dag_view import DagView
from tui.hub import hub_of
from tui.model import Dirty
from tui.table_sync import selected_key, sync_rows


class FlowsView(Horizontal):
    BINDINGS = [
        Binding("t", "trigger", "Trigger run"),
        Binding("escape", "focus_table", "Back to flows", show=False),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.spec: FlowSpec | None = None
        self.version: str | None = None
        self.dag_view = DagView(id="flow-dag")

    def compose(self) -> ComposeResult:
        yield DataTable(id="flows-table", cursor_type="row")
        with Vertical(id="flow-side"):
            yield Static("", id="flow-title")
            yield self.dag_view
            with VerticalScroll(id="flow-task-scroll"):
                yield Static("", id="flow-task")

    def on_mount(self) -> None:
        table = self.query_one("#flows-table", DataTable)
        table.add_columns("flow", "version", "tasks", "last run")
        hub_of(self).changed.subscribe(self, self.on_changed)
        self.fill()

    def on_changed(self, dirty: Dirty) -> None:
        if "flows" in dirty.kinds:
            self.fill()

    def fill(self) -> None:
        table = self.query_one("#flows-table", DataTable)
        rows = [(f.name, (f.name, f.version, str(f.tasks), palette.run_text(f.last_run_status)))
                for f in hub_of(self).model.flows_view()]
        sync_rows(table, rows)
        name = selected_key(table)
        if name is not None and (self.spec is None or self.spec.name != name
                                 or self.version != hub_of(self).model.flows[name].version):
            self.show_flow(name)

    @property
    def flow_name(self) -> str | None:
        return selected_key(self.query_one("#flows-table", DataTable))

    @on(DataTable.RowHighlighted, "#flows-table")
    def flow_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self.show_flow(str(event.row_key.value))

    @on(DataTable.RowSelected, "#flows-table")
    def flow_chosen(self) -> None:
        self.query_one("#flow-dag", DagView).focus()

    @work(exclusive=True, group="flow-detail")
    async def show_flow(self, name: str) -> None:
        hub = hub_of(self)
        title = self.query_one("#flow-title", Static)
        dag_view = self.query_one("#flow-dag", DagView)
        found = await hub.flow_spec(name)
        if found is None:
            self.spec = self.version = None
            title.update(Text(safe(f"{name}: definition not available")))
            dag_view.show(None)
            return
        self.spec, self.version = found
        n = len(self.spec.tasks)
        title.update(Text(safe(f"{name}  version {self.version}  {n} task{'s' * (n != 1)}"
                               + (f"  — {self.spec.description}" if self.spec.description else ""))))
        dag_view.show_flow(self.spec, self.version, keep_selection=False)
        self.show_task(dag_view.selected)

    @on(DagView.Selected, "#flow-dag")
    def task_selected(self, event: DagView.Selected) -> None:
        self.show_task(event.name)

    def show_task(self, name: str | None) -> None:
        members = self.dag_view.members
        text: RenderableType = ""
        if self.spec and name in members:
            text = describe.flow_group(self.spec, name, members[name])
        elif self.spec and name:
            text = describe.flow_task(self.spec, name)
        for panel in self.query("#flow-task").results(Static):  # none while the app closes
            panel.update(text)

    def action_focus_table(self) -> None:
        self.query_one("#flows-table", DataTable).focus()

    def action_trigger(self) -> None:
        name = self.flow_name
        if name is not None:
            hub_of(self).operator.trigger(name)
