"""Text from the bus reaches terminals escaped: `flowforge show`, `logs` and the dashboard."""

import asyncio
import io
import logging

import msgspec
import pytest
from nats.aio.client import Client as NATS
from rich.console import Console
from textual.app import App, ComposeResult
from textual.widgets import DataTable

from coordinator.service import Coordinator
from flowforge.client import Client
from flowforge.runtime import TerminalSafeFormatter
from flowforge.terminal import safe, safe_json
from protocol.errors import RemoteError
from protocol.flows import ParamSpec
from protocol.messages import TaskFailed, TaskLog, TaskProgress, encoder
from tests import inputflows
from tests.helpers import run_cli, wait_for
from tui import describe
from tui.table_sync import sync_rows

HOSTILE = "\x1b]0;owned\x07\x1b[2J\x9b31m\u202eevil"


def test_control_characters_become_visible_and_newlines_and_tabs_stay() -> None:
    assert safe(HOSTILE) == "\\x1b]0;owned\\x07\\x1b[2J\\x9b31m\\u202eevil"
    assert safe("a\nb\tc") == "a\nb\tc"
    assert safe("\r\x00\x7f") == "\\x0d\\x00\\x7f"


def test_json_for_a_terminal_is_still_the_same_json() -> None:
    text = encoder.encode({"m": HOSTILE}).decode()
    shown = safe_json(text)
    assert "\x1b" not in shown and "\x9b" not in shown and "\u202e" not in shown
    assert msgspec.json.decode(shown) == {"m": HOSTILE}


def _printed(renderable: object) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None, force_terminal=False)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


async def _hostile_run(client: Client, nc: NATS) -> str:
    """A run whose task a forged agent filled with escape sequences."""
    await client.register([inputflows.register_noop()])
    run = await client.start("noop")
    common = {"run_id": run.run_id, "task": "noop", "attempt": 1, "agent_id": "a1"}
    js = nc.jetstream()
    for report in (TaskProgress(**common, at=1.0, message=HOSTILE),
                   TaskLog(**common, at=1.0, text=HOSTILE + "\n"),
                   TaskFailed(**common, at=2.0, error_type="E", message=HOSTILE,
                              traceback=HOSTILE)):
        await js.publish(f"flowforge.report.{run.run_id}", encoder.encode(report))

    async def failed() -> bool:
        [task] = (await client.get(run.run_id)).tasks
        return task.status.value == "failed"
    await wait_for(failed)
    return run.run_id


async def test_show_and_logs_print_escape_sequences_as_text(
    coordinator: Coordinator, client: Client, nc: NATS, cli_env: dict[str, str]
) -> None:
    run_id = await _hostile_run(client, nc)

    for args in (["flowforge", "show", run_id], ["flowforge", "logs", run_id, "noop"],
                 ["flowforge", "show", run_id, "--json"]):
        done = await asyncio.to_thread(run_cli, args, cli_env)
        assert "\x1b" not in done.stdout and "\x9b" not in done.stdout, args
        assert "\x07" not in done.stdout and "\u202e" not in done.stdout, args
        assert "owned" in done.stdout, (args, done.stdout, done.stderr)


async def test_the_dashboard_shows_a_hostile_task_as_text(
    coordinator: Coordinator, client: Client, nc: NATS
) -> None:
    run_id = await _hostile_run(client, nc)
    detail = await client.get(run_id)
    [rec] = detail.tasks

    shown = _printed(describe.run_task(detail.run, None, rec, "noop", 3.0, HOSTILE))

    assert "\x1b" not in shown and "\x07" not in shown and "\u202e" not in shown
    assert "\\x1b]0;owned" in shown


class _TableApp(App[None]):
    def compose(self) -> ComposeResult:
        yield DataTable()


async def test_a_table_cell_from_the_bus_is_neither_markup_nor_escapes() -> None:
    app = _TableApp()
    async with app.run_test():
        table = app.query_one(DataTable)
        table.add_columns("agent", "host")
        sync_rows(table, [("k", ("[bold red]x[/]", HOSTILE))])
        cells = table.get_row("k")
        assert [c.plain for c in cells] == ["[bold red]x[/]", safe(HOSTILE)]


async def test_a_flow_whose_parameter_name_is_markup_is_refused_at_registration(
    coordinator: Coordinator, client: Client
) -> None:
    spec = inputflows.register_noop()
    task = msgspec.structs.replace(spec.tasks[0], params=[ParamSpec(name="[/]", type="int")])

    with pytest.raises(RemoteError, match="not a parameter name"):
        await client.register([msgspec.structs.replace(spec, tasks=[task])])


def test_log_lines_show_escape_sequences_as_text() -> None:
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "rejected %s", (HOSTILE,), None)
    line = TerminalSafeFormatter("%(message)s").format(record)
    assert "\x1b" not in line and line == "rejected " + safe(HOSTILE)
