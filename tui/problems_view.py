"""ProblemsView: rejected messages (with their raw bytes) and error events, newest first."""

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import DataTable, Static

from flowforge.render import cut, stamp
from flowforge.terminal import safe
from tui.hub import hub_of
from tui.model import Dirty, Problem
from tui.table_sync import selected_key, sync_rows


def problem_key(p: Problem, k: int) -> str:
    return f"{p.at:.6f}-{k}"


def problem_detail(p: Problem) -> str:
    out = f"{p.kind} on {p.subject} at {stamp(p.at)}\n{p.code}: {p.reason}"
    if p.raw is not None:
        out += f"\nraw ({len(p.raw)} bytes): {cut(repr(p.raw)[2:-1], 4000)}"
    return out


class ProblemsView(Vertical):
    def compose(self) -> ComposeResult:
        yield DataTable(id="problems-table", cursor_type="row")
        with VerticalScroll(id="problem-detail-scroll"):
            yield Static("", id="problem-detail")

    def on_mount(self) -> None:
        table = self.query_one("#problems-table", DataTable)
        table.add_columns("when", "kind", "subject", "code", "reason")
        hub_of(self).changed.subscribe(self, self.on_changed)
        self.rows: dict[str, Problem] = {}
        self.fill()

    def on_changed(self, dirty: Dirty) -> None:
        if "problems" in dirty.kinds:
            self.fill()

    def fill(self) -> None:
        problems = hub_of(self).model.problems()
        self.rows = {problem_key(p, k): p for k, p in enumerate(reversed(problems))}
        rows = [(key, (stamp(p.at), p.kind, p.subject, p.code, cut(p.reason, 70)))
                for key, p in reversed(self.rows.items())]
        sync_rows(self.query_one("#problems-table", DataTable), rows)
        self.show_detail()

    @on(DataTable.RowHighlighted, "#problems-table")
    def show_detail(self) -> None:
        key = selected_key(self.query_one("#problems-table", DataTable))
        problem = self.rows.get(key or "")
        text = problem_detail(problem) if problem else "no rejected messages or errors"
        self.query_one("#problem-detail", Static).update(Text(safe(text)))
