"""DagView: a scrollable, keyboard-navigable drawing of a DagLayout, boxes coloured by the caller.

Given a flow (``show_flow``) it also zooms (``-`` smaller boxes, ``+`` larger), collapses
groups to one box (``x`` the selected task's group, ``X`` every group) and stacks wide
fan-outs into one box (``s`` toggles; on by default), laid out by the hub.
"""

from collections.abc import Callable

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from flowforge.terminal import safe
from protocol.flows import FlowSpec
from tui import palette
from tui.dag_layout import Badge, Caption, DagLayout, Direction, Glyph, Progress
from tui.dag_shape import GROUP_MARK, STACK_MARK, Shape, foldable, group_node, groups_of, why_not_collapsible
from tui.hub import hub_of

BoxStyle = Callable[[str], Style]


class DagView(ScrollView, can_focus=True):
    """Draws only the visible rows, so flows of thousands of tasks scroll smoothly."""

    BINDINGS = [
        Binding("up", "move('up')", "Task above", show=False),
        Binding("down", "move('down')", "Task below", show=False),
        Binding("left", "move('left')", "Upstream", show=False),
        Binding("right", "move('right')", "Downstream", show=False),
        Binding("minus", "zoom(1)", "Zoom out"),
        Binding("plus,equals_sign", "zoom(-1)", "Zoom in", key_display="+", show=False),
        Binding("x", "collapse", "Group"),
        Binding("X", "collapse_all", "All groups", show=False),
        Binding("s", "stack", "Stack fan-outs", show=False),
    ]

    selected: reactive[str | None] = reactive(None)

    class Selected(Message):
        """The highlighted task changed."""

        def __init__(self, view: "DagView", name: str | None) -> None:
            super().__init__()
            self.view = view
            self.name = name

        @property
        def control(self) -> "DagView":
            return self.view

    def __init__(self, *, empty: str = "no flow selected", id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.dag: DagLayout | None = None
        self.empty = empty
        self.box_style: BoxStyle = lambda name: palette.PLAIN_BOX
        self.glyph: Glyph | None = None
        self.progress: Progress | None = None
        self.caption: Caption | None = None
        self.badge: Badge | None = None
        self.painted_rows = 0
        """Rows of the current layout drawn so far (how bench.tui_measure knows a DAG is on screen)."""
        self.spec: FlowSpec | None = None
        self.version = ""
        self.shape = Shape()

    def show_flow(self, spec: FlowSpec, version: str, *, box_style: BoxStyle | None = None,
                  glyph: Glyph | None = None, progress: Progress | None = None,
                  caption: Caption | None = None, badge: Badge | None = None,
                  keep_selection: bool = True) -> None:
        """Draw a flow at the current zoom; collapsed groups stay collapsed for the same flow."""
        if self.spec is None or self.spec.name != spec.name:
            self.shape = Shape(self.shape.zoom)
        self.spec, self.version = spec, version
        dag = hub_of(self).layout(spec, version, self.shape)
        self.show(dag, box_style=box_style, glyph=glyph, progress=progress, caption=caption,
                  badge=badge, keep_selection=keep_selection)

    @property
    def members(self) -> dict[str, tuple[str, ...]]:
        """The tasks behind each collapsed group's box on screen."""
        return self.dag.members if self.dag else {}

    def _reshape(self, shape: Shape, select: str | None = None) -> None:
        if self.spec is None or shape == self.shape:
            return
        self.shape = shape
        dag = hub_of(self).layout(self.spec, self.version, shape)
        self.show(dag, box_style=self.box_style, glyph=self.glyph, progress=self.progress,
                  caption=self.caption, badge=self.badge)
        if select is not None and select in dag.boxes:
            self.selected = select

    def action_zoom(self, step: int) -> None:
        self._reshape(self.shape.zoomed(step))

    def action_collapse(self) -> None:
        """Collapse the selected task's group to one box, or expand the selected group."""
        spec, name = self.spec, self.selected
        if spec is None or name is None:
            return
        if name.startswith(STACK_MARK):
            self.action_stack()
            return
        if name in self.members:
            group = name.removeprefix(GROUP_MARK)
            self._reshape(self.shape.toggled(group), select=self.members[name][0])
            return
        group = next((t.group for t in spec.tasks if t.name == name), None)
        if group is None:
            self.app.notify(safe(f"{name} is in no group"), severity="warning", markup=False)
            return
        reason = why_not_collapsible(spec, group, self.shape.collapsed)
        if reason is not None:
            self.app.notify(safe(f"cannot collapse: {reason}"), severity="warning", markup=False)
            return
        self._reshape(self.shape.toggled(group), select=group_node(group))

    def action_stack(self) -> None:
        """Stack wide fan-outs (tasks with the same dependencies and dependants) or unstack them."""
        select = self.selected
        if select is not None and select.startswith(STACK_MARK):
            select = self.members[select][0]
        self._reshape(self.shape.restacked(), select=select)

    def action_collapse_all(self) -> None:
        """Collapse every group that can be, or expand them all if some are collapsed."""
        if self.spec is None:
            return
        if self.shape.collapsed:
            self._reshape(self.shape.with_collapsed(()))
            return
        groups = foldable(self.spec, groups_of(self.spec))
        if not groups:
            self.app.notify("no group in this flow can be collapsed", severity="warning")
            return
        self._reshape(self.shape.with_collapsed(groups))

    def show(self, dag: DagLayout | None, *, box_style: BoxStyle | None = None,
             glyph: Glyph | None = None, progress: Progress | None = None,
             caption: Caption | None = None, badge: Badge | None = None,
             keep_selection: bool = True) -> None:
        """Draw ``dag``; the selection stays when the task is still there, else the first task."""
        same = dag is self.dag
        self.dag = dag
        if box_style is not None:
            self.box_style = box_style
        self.glyph = glyph
        self.progress = progress
        self.caption = caption
        self.badge = badge
        self.painted_rows = 0
        self.virtual_size = Size(dag.width, dag.height) if dag else Size(0, 0)
        if dag is None:
            self.selected = None
        elif not (keep_selection and self.selected in dag.boxes):
            self.selected = dag.first()
        if not same:
            self.scroll_to(0, 0, animate=False)
            self.call_after_refresh(self._reveal)
        self.refresh()

    def restyle(self) -> None:
        """States changed: draw again with the same layout."""
        self.refresh()

    def watch_selected(self, name: str | None) -> None:
        self.post_message(self.Selected(self, name))
        self._reveal()
        self.refresh()

    def _reveal(self) -> None:
        if self.dag is None or self.selected is None:
            return
        box = self.dag.boxes[self.selected]
        self.scroll_to_region(Region(box.x - 2, box.y, box.w + 4, box.h), animate=False, force=True)

    def action_move(self, direction: Direction) -> None:
        if self.dag is None or self.selected is None:
            return
        target = self.dag.neighbour(self.selected, direction)
        if target is not None:
            self.selected = target

    def on_click(self, event: events.Click) -> None:
        if self.dag is None:
            return
        offset = event.get_content_offset(self)
        if offset is None:
            return
        name = self.dag.at(offset.x + int(self.scroll_x), offset.y + int(self.scroll_y))
        if name is not None:
            self.selected = name

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        dag = self.dag
        scroll_x, scroll_y = self.scroll_offset
        if dag is None:
            return Strip([Segment(self.empty, palette.EDGE)]) if y == 0 else Strip.blank(width)
        row = y + scroll_y
        if row >= dag.height:
            return Strip.blank(width)
        self.painted_rows += 1
        segments = []
        for span in dag.row(row, self.glyph, self.progress, self.caption, self.badge):
            if span.role == "box" and span.owner is not None:
                style = self.box_style(span.owner)
                if span.owner == self.selected:
                    style = style + palette.SELECTED
            elif span.role == "group":
                style = palette.GROUP
            elif span.role == "arrow":
                style = palette.ARROW
            else:
                style = palette.EDGE
            segments.append(Segment(span.text, style))
        return Strip(segments, dag.width).crop(scroll_x, scroll_x + width).extend_cell_length(width)
