"""Bring a DataTable to a list of keyed rows with few changes, keeping the cursor on its row."""

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.text import Text
from textual.widgets import DataTable

from flowforge.terminal import safe

Cell = str | Text
Row = tuple[str, Sequence[Cell]]


def sync_rows(table: DataTable, rows: Sequence[Row]) -> None:
    """Cells are updated in place while the keys keep their order; otherwise rebuilt.

    A ``str`` cell is shown as it is (DataTable would read it as markup), with control
    characters made visible: cells hold what came off the bus."""
    rows = [(key, [_plain(c) for c in cells]) for key, cells in rows]
    keys = [key for key, _ in rows]
    current = [str(k.value) for k in table.rows]
    if keys == current:
        columns = list(table.columns)
        for key, cells in rows:
            old = table.get_row(key)
            for col, new, was in zip(columns, cells, old, strict=True):
                if not _same(new, was):
                    table.update_cell(key, col, new)
        return
    selected = current[table.cursor_row] if 0 <= table.cursor_row < len(current) else None
    table.clear()
    for key, cells in rows:
        table.add_row(*cells, key=key)
    if selected in keys:
        table.move_cursor(row=keys.index(selected), animate=False)


def _plain(cell: Cell) -> Text:
    return Text(safe(cell)) if isinstance(cell, str) else cell


def _same(new: Cell, old: object) -> bool:
    if isinstance(new, Text):
        return isinstance(old, Text) and new == old and new.style == old.style
    return new == old


def selected_key(table: DataTable) -> str | None:
    if not table.row_count or table.cursor_row < 0:
        return None
    try:
        key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
    except Exception:  # noqa: BLE001 - the cursor may point past a table that just shrank
        return None
    return str(key.value) if key.value is not None else None


def unlisted(counts: Mapping[str, int], listed: Iterable[Any], order: Iterable[Any]) -> str:
    """What a page of rows leaves out, by status in ``order`` (``12 waiting, 3 succeeded``):
    ``counts`` for all of them, ``listed`` the statuses of those on the page."""
    shown = Counter(listed)
    left = [(s, counts.get(s, 0) - shown[s]) for s in order]
    return ", ".join(f"{n:,} {s.value}" for s, n in left if n > 0)
