"""AgentsView: live, lost and stopped agents; host, queues, slots and how long since each was heard."""

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import DataTable, Static

from flowforge.render import cut
from flowforge.terminal import safe
from protocol.records import AgentInfo
from tui.hub import hub_of
from tui.model import Dirty
from tui.table_sync import Row, selected_key, sync_rows

AGENT_COLOUR = {"live": "green", "lost": "bold red", "stopped": "grey50"}


def agent_row(a: AgentInfo, now: float) -> Row:
    return a.agent_id, (
        a.agent_id, Text(a.status, style=AGENT_COLOUR.get(a.status, "")), f"{a.host} ({a.pid})",
        ",".join(a.queues), f"{a.slots_busy}/{a.slots_total}", str(len(a.functions)),
        f"{max(0.0, now - a.last_seen):.0f} s ago")


def agent_detail(a: AgentInfo) -> str:
    return (f"{a.agent_id} on {a.host} pid {a.pid}, queues {', '.join(a.queues)}\n"
            f"functions: {cut(', '.join(a.functions), 2000)}")


class AgentsView(Vertical):
    def compose(self) -> ComposeResult:
        yield DataTable(id="agents-table", cursor_type="row")
        with VerticalScroll(id="agent-detail-scroll"):
            yield Static("", id="agent-detail")

    def on_mount(self) -> None:
        table = self.query_one("#agents-table", DataTable)
        table.add_columns("agent", "status", "host", "queues", "slots", "functions", "heartbeat")
        hub_of(self).changed.subscribe(self, self.on_changed)
        self.fill()

    def on_changed(self, dirty: Dirty) -> None:
        if "agents" in dirty.kinds or "tick" in dirty.kinds:
            self.fill()

    def fill(self) -> None:
        hub = hub_of(self)
        now = hub.clock()
        table = self.query_one("#agents-table", DataTable)
        sync_rows(table, [agent_row(a, now) for a in hub.model.agents_view()])
        self.show_detail()

    @on(DataTable.RowHighlighted, "#agents-table")
    def show_detail(self) -> None:
        key = selected_key(self.query_one("#agents-table", DataTable))
        agent = hub_of(self).model.agents.get(key or "")
        text = agent_detail(agent) if agent else "no agents have been seen"
        self.query_one("#agent-detail", Static).update(Text(safe(text)))
