"""Modal screens: confirm an action, trigger a run with JSON parameters, mark a task, read a text."""

import json
from collections.abc import Awaitable, Callable
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static, TextArea

from flowforge.terminal import safe
from protocol.errors import FlowForgeError
from protocol.flows import FlowSpec
from protocol.records import RunRecord


def parse_json_object(text: str, what: str = "parameters") -> dict[str, Any]:
    """The text as a JSON object, or ValueError saying what is wrong and where."""
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} are not valid JSON: {exc.msg} (line {exc.lineno}, "
                         f"column {exc.colno})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object like {{\"n_rows\": 10}}, "
                         f"not {type(value).__name__}")
    return value


def params_hint(spec: FlowSpec | None) -> str:
    if spec is None:
        return "parameters: unknown (the flow definition could not be fetched)"
    params = spec.param_specs()
    if not params:
        return "this flow takes no parameters" + (
            " (but accepts any)" if spec.accepts_any_param() else "")
    return "parameters: " + ", ".join(
        f"{p.name}: {p.type or 'any'}{'' if p.required else ' (optional)'}" for p in params.values())


class ConfirmScreen(ModalScreen[bool]):
    """Yes or no; y / n / escape."""

    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(Text(safe(self.question)), classes="question")
            with Horizontal(classes="buttons"):
                yield Button("Yes (y)", id="yes", variant="warning")
                yield Button("No (n)", id="no")

    @on(Button.Pressed)
    def pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class TriggerScreen(ModalScreen[RunRecord | None]):
    """Parameters as a JSON object; checked here, then by the coordinator (its error shows here)."""

    BINDINGS = [Binding("ctrl+s", "submit", "Start run"), Binding("escape", "cancel", "Cancel")]

    def __init__(self, flow: str, spec: FlowSpec | None,
                 start: Callable[[dict[str, Any]], Awaitable[RunRecord]]) -> None:
        super().__init__()
        self.flow = flow
        self.spec = spec
        self.start = start

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(Text(safe(f"Start a run of {self.flow}")), classes="question")
            yield Static(Text(safe(params_hint(self.spec))), classes="hint")
            yield TextArea("{}", id="params", soft_wrap=True, show_line_numbers=False)
            yield Static("", id="form-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Start (ctrl+s)", id="start", variant="success")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#params", TextArea).focus()

    @on(Button.Pressed, "#start")
    def action_submit(self) -> None:
        try:
            params = parse_json_object(self.query_one("#params", TextArea).text)
        except ValueError as exc:
            self.show_error(str(exc))
            return
        self.show_error("starting…")
        self.submit(params)

    @work(exclusive=True)
    async def submit(self, params: dict[str, Any]) -> None:
        try:
            run = await self.start(params)
        except FlowForgeError as exc:
            self.show_error(str(exc))
            return
        self.dismiss(run)

    def show_error(self, text: str) -> None:
        self.query_one("#form-error", Static).update(Text(safe(text)))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class MarkScreen(ModalScreen[tuple[str, Any] | None]):
    """Mark a task succeeded (with an output, JSON) or failed."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, run_id: str, task: str) -> None:
        super().__init__()
        self.run_id = run_id
        self.task_name = task

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(Text(safe(f"Mark {self.task_name} of run {self.run_id}")), classes="question")
            yield Static("output when marked succeeded (JSON; its dependants receive it):",
                         classes="hint")
            yield TextArea("null", id="output", soft_wrap=True, show_line_numbers=False)
            yield Static("", id="form-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Succeeded", id="succeeded", variant="success")
                yield Button("Failed", id="failed", variant="error")
                yield Button("Cancel (esc)", id="cancel")

    @on(Button.Pressed, "#succeeded")
    def succeeded(self) -> None:
        try:
            output = json.loads(self.query_one("#output", TextArea).text or "null")
        except json.JSONDecodeError as exc:
            self.query_one("#form-error", Static).update(Text(safe(f"output is not valid JSON: {exc.msg}")))
            return
        self.dismiss(("succeeded", output))

    @on(Button.Pressed, "#failed")
    def failed(self) -> None:
        self.dismiss(("failed", None))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class TextScreen(ModalScreen[None]):
    """A long text (a task's whole output), read-only and scrollable; escape closes."""

    BINDINGS = [Binding("escape,q", "close", "Close")]

    def __init__(self, title: str, text: str) -> None:
        super().__init__()
        self.title_text = title
        self.text = text

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(Text(safe(self.title_text)), classes="question")
            yield TextArea(self.text, read_only=True, id="full-text", show_line_numbers=True)

    def action_close(self) -> None:
        self.dismiss(None)
