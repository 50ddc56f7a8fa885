"""Colours and marks for run, task, batch and batch item states, and the legend that explains them."""

from rich.style import Style
from rich.text import Text

from protocol.batches import BatchState, ItemStatus
from protocol.states import RunStatus, TaskStatus

TASK_COLOUR: dict[TaskStatus, str] = {
    TaskStatus.PENDING: "grey62",
    TaskStatus.QUEUED: "cyan",
    TaskStatus.RUNNING: "bold yellow",
    TaskStatus.RETRY_WAIT: "dark_orange",
    TaskStatus.SUCCEEDED: "green",
    TaskStatus.FAILED: "bold red",
    TaskStatus.UPSTREAM_FAILED: "magenta",
    TaskStatus.CANCELLED: "grey50",
    TaskStatus.SKIPPED: "blue",
}

TASK_GLYPH: dict[TaskStatus, str] = {
    TaskStatus.PENDING: "○",
    TaskStatus.QUEUED: "◌",
    TaskStatus.RUNNING: "●",
    TaskStatus.RETRY_WAIT: "↻",
    TaskStatus.SUCCEEDED: "✓",
    TaskStatus.FAILED: "✗",
    TaskStatus.UPSTREAM_FAILED: "⊘",
    TaskStatus.CANCELLED: "■",
    TaskStatus.SKIPPED: "»",
}

RUN_COLOUR: dict[RunStatus, str] = {
    RunStatus.PENDING: "grey62",
    RunStatus.RUNNING: "bold yellow",
    RunStatus.SUCCEEDED: "green",
    RunStatus.FAILED: "bold red",
    RunStatus.CANCELLED: "grey50",
}

ITEM_COLOUR: dict[ItemStatus, str] = {
    ItemStatus.WAITING: "grey62",
    ItemStatus.SKIPPED: "blue",
    ItemStatus.PENDING: "cyan",
    ItemStatus.RUNNING: "bold yellow",
    ItemStatus.SUCCEEDED: "green",
    ItemStatus.FAILED: "bold red",
    ItemStatus.CANCELLED: "grey50",
}

BATCH_COLOUR: dict[BatchState, str] = {
    BatchState.LOADING: "cyan",
    BatchState.ACTIVE: "bold yellow",
    BatchState.PAUSED: "dark_orange",
    BatchState.CANCELLED: "grey50",
    BatchState.DONE: "green",
}

EDGE = Style.parse("grey50")
GROUP = Style.parse("italic grey62")
ARROW = Style.parse("grey70")
PLAIN_BOX = Style.parse("bold")
SELECTED = Style(reverse=True, bold=True)

_styles: dict[str, Style] = {}


def style(colour: str) -> Style:
    """A parsed Rich style, cached (render_line asks for one per span)."""
    found = _styles.get(colour)
    if found is None:
        found = _styles[colour] = Style.parse(colour)
    return found


def task_style(status: TaskStatus) -> Style:
    return style(TASK_COLOUR.get(status, "default"))


def run_text(status: RunStatus | None) -> Text:
    if status is None:
        return Text("-", style="grey50")
    return Text(status.value, style=RUN_COLOUR.get(status, "default"))


def task_text(status: TaskStatus) -> Text:
    return Text(f"{TASK_GLYPH.get(status, '?')} {status.value}", style=TASK_COLOUR.get(status, ""))


def legend() -> Text:
    """One line: a mark and a colour per task state."""
    out = Text()
    for status in TaskStatus:
        if out:
            out.append("  ")
        out.append(f"{TASK_GLYPH[status]} {status.value}", style=TASK_COLOUR[status])
    return out
