"""Zoom and collapsed groups: which nodes are drawn, how their edges are rewired, what they show."""

from hypothesis import given, settings
from hypothesis import strategies as st

from flowforge import register_task_pipeline
from protocol.dag import find_cycle
from protocol.flows import FlowSpec
from protocol.states import TaskStatus
from tests.test_tui_dag_layout import dependants, reached
from tui.dag_layout import DagLayout
from tui.dag_shape import (
    STACK_MIN,
    Shape,
    foldable,
    group_node,
    group_status,
    groups_of,
    quotient,
    shaped_nodes,
    why_not_collapsible,
)


def noop() -> None:
    return None


def flow(name: str, tasks: dict[str, tuple[list[str], str | None]]) -> FlowSpec:
    """A flow from {task: (depends_on, group)}; registered under a name no other test uses."""
    pipeline = {t: {"function": noop, "depends_on": deps, **({"group": g} if g else {})}
                for t, (deps, g) in tasks.items()}
    return register_task_pipeline(flow_name=f"shape_{name}", pipeline=pipeline)


def etl() -> FlowSpec:
    """``load`` → group ``clean`` (a → b, a → c) → ``report`` (needs b and c) and ``audit`` (needs a)."""
    return flow("etl", {
        "load": ([], None),
        "a": (["load"], "clean"), "b": (["a"], "clean"), "c": (["a"], "clean"),
        "report": (["b", "c"], None),
        "audit": (["a", "load"], None),
    })


def test_a_collapsed_group_is_one_node_with_the_edges_of_its_tasks() -> None:
    shaped = shaped_nodes(etl(), ["clean"])
    node = group_node("clean")
    deps = {n.name: set(n.deps) for n in shaped.nodes}
    assert deps == {"load": set(), node: {"load"}, "report": {node}, "audit": {node, "load"}}
    assert shaped.members == {node: ("a", "b", "c")}
    label = next(n.label for n in shaped.nodes if n.name == node)
    assert label == "▣ clean (3)"


def test_the_lines_of_a_collapsed_drawing_lead_to_the_rewired_dependants() -> None:
    shaped = shaped_nodes(etl(), ["clean"])
    dag = DagLayout(shaped.nodes)
    assert reached(dag) == dependants(shaped.nodes)
    assert group_node("clean") in dag.text()


def test_a_group_with_an_outside_task_between_its_tasks_is_not_collapsed() -> None:
    spec = flow("between", {
        "a": ([], "g"), "outside": (["a"], None), "b": (["outside"], "g"),
    })
    reason = why_not_collapsible(spec, "g")
    assert reason is not None and "task 'outside'" in reason and "cycle" in reason
    shaped = shaped_nodes(spec, ["g"])
    assert [n.name for n in shaped.nodes] == ["a", "outside", "b"] and not shaped.members
    assert why_not_collapsible(spec, "nope") == "there is no group 'nope' in flow 'shape_between'"


def test_two_groups_that_feed_each_other_cannot_both_be_one_box() -> None:
    spec = flow("crossed", {
        "a1": ([], "a"), "b1": ([], "b"), "a2": (["b1"], "a"), "b2": (["a1"], "b"),
    })
    assert why_not_collapsible(spec, "a") is None and why_not_collapsible(spec, "b") is None
    assert "group 'a'" in (why_not_collapsible(spec, "b", ["a"]) or "")
    assert foldable(spec, ["b", "a"]) == ["a"]
    assert set(shaped_nodes(spec, ["a", "b"]).members) == {group_node("a")}


def fan(name: str, width: int, group: str | None = None) -> FlowSpec:
    tasks: dict[str, tuple[list[str], str | None]] = {"root": ([], None)}
    tasks |= {f"m{i:02d}": (["root"], group) for i in range(width)}
    tasks["join"] = ([f"m{i:02d}" for i in range(width)], None)
    return flow(f"fan_{name}", tasks)


def test_a_wide_fan_out_is_stacked_into_one_box_between_root_and_join() -> None:
    shaped = shaped_nodes(fan("wide", 20), stacked=True)
    stack = "≡ m00"
    assert [(n.name, n.deps) for n in shaped.nodes] == [
        ("root", ()), (stack, ("root",)), ("join", (stack,))]
    assert shaped.members[stack] == tuple(f"m{i:02d}" for i in range(20))
    dag = DagLayout(shaped.nodes)
    assert "20× m00 … m19" in dag.text() and dag.height == 3  # noqa: RUF001
    assert reached(dag) == dependants(shaped.nodes)
    assert len(shaped_nodes(fan("wide", 20)).nodes) == 22  # not asked: every task


def test_only_enough_tasks_with_the_same_place_and_group_are_stacked() -> None:
    assert len(shaped_nodes(fan("narrow", STACK_MIN - 1), stacked=True).nodes) == STACK_MIN + 1
    spec = flow("mixed", {"root": ([], None), **{f"a{i}": (["root"], "ga") for i in range(8)},
                          **{f"b{i}": (["root"], "gb") for i in range(8)}, "c": (["a0"], None)})
    shaped = shaped_nodes(spec, stacked=True)
    assert set(shaped.members) == {"≡ b0"}  # a0 has a dependant the other a's have not


def test_zoom_levels_shrink_the_labels_and_stop_at_both_ends() -> None:
    spec = flow("zoom", {"a_task_with_a_really_long_name": ([], None)})
    widths = [DagLayout(shaped_nodes(spec).nodes, Shape(z).max_label).width for z in range(3)]
    assert widths[0] > widths[1] > widths[2]
    assert Shape().zoomed(-1) == Shape() and Shape(2).zoomed(5) == Shape(2)


def test_a_group_shows_the_most_telling_state_of_its_tasks() -> None:
    S = TaskStatus
    assert group_status([S.SUCCEEDED, S.FAILED, S.RUNNING]) is S.FAILED
    assert group_status([S.SUCCEEDED, S.RUNNING, S.PENDING]) is S.RUNNING
    assert group_status([S.SUCCEEDED, S.SKIPPED]) is S.SKIPPED
    assert group_status([S.SUCCEEDED, S.SUCCEEDED]) is S.SUCCEEDED
    assert group_status([]) is S.PENDING


@st.composite
def grouped_flows(draw: st.DrawFn) -> FlowSpec:
    n = draw(st.integers(2, 25))
    tasks: dict[str, tuple[list[str], str | None]] = {}
    for i in range(n):
        earlier = [f"t{j}" for j in range(i)]
        deps = draw(st.lists(st.sampled_from(earlier), max_size=3, unique=True)) if earlier else []
        tasks[f"t{i}"] = (deps, draw(st.sampled_from([None, "g0", "g1", "g2"])))
    return flow("random", tasks)


@settings(max_examples=150, deadline=None)
@given(grouped_flows(), st.data())
def test_collapsing_never_draws_a_cycle_and_keeps_every_dependency(spec: FlowSpec,
                                                                   data: st.DataObject) -> None:
    groups = list(groups_of(spec))
    chosen = data.draw(st.lists(st.sampled_from(groups), unique=True)) if groups else []
    shaped = shaped_nodes(spec, chosen, stacked=data.draw(st.booleans()))
    deps = {n.name: list(n.deps) for n in shaped.nodes}
    assert find_cycle(deps) is None
    node_of = {m: g for g, ms in shaped.members.items() for m in ms}
    folded = foldable(spec, chosen)
    assert {m for m in shaped.members if m.startswith("▣")} == {group_node(g) for g in folded}
    drawn = [n.name for n in shaped.nodes if n.name not in shaped.members]
    drawn += [t for ms in shaped.members.values() for t in ms]
    assert sorted(drawn) == sorted(t.name for t in spec.tasks)  # each task in one box
    for task in spec.tasks:  # every dependency between different boxes is still drawn
        me = node_of.get(task.name, task.name)
        for d in task.depends_on:
            if node_of.get(d, d) != me:
                assert node_of.get(d, d) in deps[me]
    for g in set(chosen) - set(folded):  # a group left open would have drawn a cycle
        before = [f for f in folded if f < g]
        assert why_not_collapsible(spec, g, before) is not None
        forced, _ = quotient(spec, [*before, g])
        assert find_cycle(forced) is not None
