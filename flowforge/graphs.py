"""A flow's DAG for people outside the terminal: Mermaid and Graphviz dot, optionally coloured by a run."""

from collections.abc import Mapping

from protocol.flows import FlowSpec
from protocol.states import TaskStatus

COLOURS: dict[TaskStatus, tuple[str, str]] = {
    # fill, stroke
    TaskStatus.PENDING: ("#eeeeee", "#999999"),
    TaskStatus.QUEUED: ("#e3ecfa", "#6b8fd6"),
    TaskStatus.RUNNING: ("#cfe0ff", "#2f6fde"),
    TaskStatus.RETRY_WAIT: ("#fff1cc", "#d49b00"),
    TaskStatus.SUCCEEDED: ("#d6f5d6", "#2e9e44"),
    TaskStatus.FAILED: ("#ffd6d6", "#d43a3a"),
    TaskStatus.UPSTREAM_FAILED: ("#ffe8d6", "#d4782f"),
    TaskStatus.CANCELLED: ("#e0e0e0", "#555555"),
    TaskStatus.SKIPPED: ("#f5f5f5", "#bbbbbb"),
}


def _label(spec: FlowSpec, name: str, states: Mapping[str, TaskStatus] | None) -> list[str]:
    task = next(t for t in spec.tasks if t.name == name)
    lines = [task.verbose_name or name]
    if task.verbose_name:
        lines.append(f"({name})")
    if task.queue != "default":
        lines.append(f"queue {task.queue}")
    if states and name in states:
        lines.append(states[name].value)
    return lines


def _groups(spec: FlowSpec) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for t in spec.tasks:
        if t.group:
            groups.setdefault(t.group, []).append(t.name)
    return groups


def _esc(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def mermaid(spec: FlowSpec, states: Mapping[str, TaskStatus] | None = None) -> str:
    """A ``flowchart LR`` with grouped tasks in subgraphs and states as classes."""
    ids = {t.name: f"t{i}" for i, t in enumerate(spec.tasks)}
    out = ["flowchart LR"]
    grouped = {n for names in _groups(spec).values() for n in names}

    def node(name: str) -> str:
        text = "<br/>".join(_label(spec, name, states)).replace('"', "#quot;")
        return f'{ids[name]}["{text}"]'

    for t in spec.tasks:
        if t.name not in grouped:
            out.append(f"  {node(t.name)}")
    for i, (group, names) in enumerate(_groups(spec).items()):
        out.append(f'  subgraph g{i}["{group}"]')
        out += [f"    {node(n)}" for n in names]
        out.append("  end")
    for t in spec.tasks:
        out += [f"  {ids[d]} --> {ids[t.name]}" for d in t.depends_on]
    if states:
        for status, (fill, stroke) in COLOURS.items():
            members = [ids[n] for n, s in states.items() if s is status and n in ids]
            if members:
                out.append(f"  classDef {status.value} fill:{fill},stroke:{stroke}")
                out.append(f"  class {','.join(members)} {status.value}")
    return "\n".join(out)


def dot(spec: FlowSpec, states: Mapping[str, TaskStatus] | None = None) -> str:
    """Graphviz: ``flowforge graph F --format dot | dot -Tpng > f.png``."""
    out = [f'digraph "{_esc(spec.name)}" {{', "  rankdir=LR;",
           '  node [shape=box, style="rounded,filled", fillcolor="#ffffff", fontname="Helvetica"];']

    def node(name: str) -> str:
        label = "\\n".join(_esc(x) for x in _label(spec, name, states))
        attrs = f'label="{label}"'
        if states and name in states:
            fill, stroke = COLOURS[states[name]]
            attrs += f', fillcolor="{fill}", color="{stroke}"'
        return f'"{_esc(name)}" [{attrs}];'

    grouped = {n for names in _groups(spec).values() for n in names}
    out += [f"  {node(t.name)}" for t in spec.tasks if t.name not in grouped]
    for i, (group, names) in enumerate(_groups(spec).items()):
        out.append(f'  subgraph cluster_{i} {{ label="{_esc(group)}"; style="rounded,dashed";')
        out += [f"    {node(n)}" for n in names]
        out.append("  }")
    for t in spec.tasks:
        out += [f'  "{_esc(d)}" -> "{_esc(t.name)}";' for d in t.depends_on]
    out.append("}")
    return "\n".join(out)
