"""Hub: what every view shares — the source, the model, the clock, the change signal, layouts."""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from textual.dom import DOMNode
from textual.signal import Signal

from protocol.batches import BatchRecord
from protocol.errors import FlowForgeError
from protocol.flows import FlowSpec
from tui.dag_layout import DagLayout
from tui.dag_shape import Shape, shaped_nodes
from tui.model import Dirty, Model
from tui.source import DataSource


class Actions(Protocol):
    """What a view may ask of the deployment (tui/operator.py's Operator; each asks first)."""

    def trigger(self, flow: str) -> None: ...
    def cancel(self, run_id: str) -> None: ...
    def retry(self, run_id: str) -> None: ...
    def mark(self, run_id: str, task: str) -> None: ...
    def toggle_schedule(self, name: str, paused: bool) -> None: ...
    def run_schedule(self, name: str) -> None: ...
    def toggle_batch(self, batch: BatchRecord) -> None: ...
    def cancel_batch(self, batch: BatchRecord) -> None: ...
    def open_run(self, run_id: str) -> None: ...


@dataclass
class Hub:
    source: DataSource
    model: Model
    clock: Callable[[], float]
    changed: Signal[Dirty]
    layouts: dict[tuple[str, str, Shape], DagLayout] = field(default_factory=dict)
    operator: Actions = field(init=False)
    """Set by the app once it exists: the actions every view offers."""

    async def flow_spec(self, name: str, version: str | None = None) -> tuple[FlowSpec, str] | None:
        """A flow's definition at ``version`` (default: registered), fetched once; None if gone."""
        summary = self.model.flows.get(name)
        version = version or (summary.version if summary else None)
        spec = self.model.spec(name, version) if version else None
        if spec is not None and version is not None:
            return spec, version
        try:
            detail = await self.source.flow(name, version)
        except FlowForgeError:
            return None
        self.model.set_flow(detail)
        return detail.spec, detail.version

    def layout(self, spec: FlowSpec, version: str, shape: Shape | None = None) -> DagLayout:
        """The flow's DAG laid out at a zoom level with some groups collapsed (cached)."""
        shape = shape or Shape()
        key = (spec.name, version, shape)
        dag = self.layouts.get(key)
        if dag is None:
            shaped = shaped_nodes(spec, shape.collapsed, shape.stacked)
            dag = self.layouts[key] = DagLayout(shaped.nodes, shape.max_label)
            dag.members = shaped.members
        return dag


async def fetch_log(hub: "Hub", run_id: str, name: str) -> bool:
    """A task's stored log into the model (log events that came meanwhile go after it); True
    when it was taken (a newer fetch did not overtake it)."""
    buffer = hub.model.logs.get((run_id, name))
    if buffer is None:
        return False
    ticket = buffer.ask()
    try:
        stored = await hub.source.task_log(run_id, name)
    except FlowForgeError as exc:
        stored = f"(could not fetch the log: {exc})\n"
    return hub.model.set_log(run_id, name, stored, ticket)


def hub_of(node: DOMNode) -> Hub:
    """The hub of the dashboard app this widget is mounted in."""
    hub = getattr(node.app, "hub", None)
    if not isinstance(hub, Hub):
        raise RuntimeError(f"{type(node).__name__} must be mounted in a DashboardApp")
    return hub
