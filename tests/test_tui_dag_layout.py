"""The DAG layout: layers left to right, boxes and connectors, groups framed, big flows laid out."""

from collections.abc import Sequence

import pytest

from bench.tui_layout import random_nodes
from tests.test_tui_support import spec
from tui.dag_graph import Node
from tui.dag_layout import LINE_CHARS, DagLayout, layout, layout_spec, progress_edge

UP, DOWN, LEFT, RIGHT = 1, 2, 4, 8
STEP = {UP: (0, -1), DOWN: (0, 1), RIGHT: (1, 0), LEFT: (-1, 0)}
BACK = {UP: DOWN, DOWN: UP, LEFT: RIGHT, RIGHT: LEFT}
ARMS = {ch: bits for bits, ch in enumerate(LINE_CHARS) if ch not in " ─│"} | {
    "─": LEFT | RIGHT, "│": UP | DOWN}


def reached(dag: DagLayout) -> dict[str, set[str]]:
    """For each box, the boxes its lines lead to: from the cell right of its middle row, along
    line glyphs, never leftwards (every connector flows left to right), straight across ┼
    (a crossing), into a box through ▶."""
    grid = dag.text().splitlines()

    def at(x: int, y: int) -> str:
        return grid[y][x] if 0 <= y < len(grid) and 0 <= x < len(grid[y]) else " "

    out: dict[str, set[str]] = {}
    for name, box in dag.boxes.items():
        found: set[str] = set()
        start = (box.x + box.w, box.y + 1, RIGHT)
        seen, todo = set(), [start] if ARMS.get(at(box.x + box.w, box.y + 1), 0) & LEFT else []
        while todo:
            state = todo.pop()
            if state in seen:
                continue
            seen.add(state)
            x, y, heading = state
            ch = at(x, y)
            if ch == "▶":
                target = dag.at(x + 1, y)
                if target is not None:
                    found.add(target)
                continue
            arms = ARMS.get(ch, 0)
            exits = [heading] if ch == "┼" else [a for a in STEP if arms & a and a != BACK[heading]]
            for a in exits:
                if a == LEFT or not arms & a:
                    continue
                dx, dy = STEP[a]
                nxt = at(x + dx, y + dy)
                if (nxt == "▶" and a == RIGHT) or ARMS.get(nxt, 0) & BACK[a]:
                    todo.append((x + dx, y + dy, a))
        out[name] = found
    return out


def dependants(nodes: Sequence[Node]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {n.name: set() for n in nodes}
    for n in nodes:
        for d in n.deps:
            out[d].add(n.name)
    return out


def test_each_task_sits_one_layer_right_of_its_last_dependency() -> None:
    dag = layout_spec(spec("pipeline_simple"))
    assert dag.order == [["fetch_data1", "fetch_data2"], ["clean_data"], ["analyze_data"],
                         ["some_post_process_function"]]
    boxes = dag.boxes
    assert boxes["fetch_data1"].x < boxes["clean_data"].x < boxes["analyze_data"].x \
        < boxes["some_post_process_function"].x


def test_a_chain_is_drawn_on_one_row_with_arrows_into_each_box() -> None:
    dag = layout([Node("a"), Node("b", ("a",)), Node("c", ("b",))])
    assert dag.height == 3
    assert dag.text().splitlines()[1] == " │ · a │────▶│ · b │────▶│ · c │"


def test_the_pipeline_simple_drawing_has_boxes_connectors_and_its_group() -> None:
    text = layout_spec(spec("pipeline_simple")).text()
    assert "│ · fetch_data1 │" in text and "│ · clean_data │" in text
    assert "┌ analyze_data ┄" in text  # some_post_process_function is nested under analyze_data
    assert text.count("▶") == 5  # one arrow per dependency: lines of two sources never merge
    assert "some_post_process_funct…" in text  # long labels are cut


def test_boxes_never_overlap_and_stay_on_the_canvas() -> None:
    dag = layout(random_nodes(300))
    cells: set[tuple[int, int]] = set()
    for box in dag.boxes.values():
        assert box.x >= 0 and box.x + box.w <= dag.width and box.y >= 0
        assert box.y + box.h <= dag.height
        area = {(x, y) for x in range(box.x, box.x + box.w) for y in range(box.y, box.y + box.h)}
        assert not cells & area
        cells |= area


def test_a_glyph_per_task_is_drawn_inside_its_box() -> None:
    dag = layout([Node("a"), Node("b", ("a",))])
    text = dag.text(glyph=lambda name: "✓" if name == "a" else "✗")
    assert "│ ✓ a │" in text and "│ ✗ b │" in text


def test_spans_name_the_task_that_owns_each_box() -> None:
    dag = layout([Node("a"), Node("b", ("a",))])
    owners = {(s.owner, s.role) for s in dag.row(1)}
    assert ("a", "box") in owners and ("b", "box") in owners and (None, "arrow") in owners


def test_keyboard_neighbours_follow_the_layers() -> None:
    dag = layout_spec(spec("pipeline_simple_with_failure"))
    assert dag.first() == "fetch_data1"
    assert dag.neighbour("fetch_data1", "down") == "fetch_data2"
    assert dag.neighbour("fetch_data1", "up") is None
    assert dag.neighbour("fetch_data1", "right") in ("clean_data", "independent_summary")
    assert dag.neighbour("faulty_transform", "right") == "publish_results"
    assert dag.neighbour("publish_results", "right") is None


def test_a_click_finds_the_box_under_it() -> None:
    dag = layout([Node("a"), Node("b", ("a",))])
    box = dag.boxes["b"]
    assert dag.at(box.x + 1, box.y + 1) == "b"
    assert dag.at(0, dag.height + 5) is None


def test_dependencies_outside_the_set_are_ignored() -> None:
    dag = layout([Node("a", ("missing",))])
    assert dag.order == [["a"]]


def test_a_thousand_task_flow_is_laid_out_and_any_row_can_be_drawn() -> None:
    dag = layout(random_nodes(1000))
    assert len(dag.boxes) == 1000
    assert sum(len(names) for names in dag.order) == 1000
    for y in (0, dag.height // 2, dag.height - 1):
        assert sum(len(s.text) for s in dag.row(y)) == dag.width


def test_fetch_data1_leads_only_to_clean_data_in_pipeline_simple_with_failure() -> None:
    # Bundled lines once joined fetch_data1's line to fetch_data2's, which also fed
    # independent_summary: on screen fetch_data1 seemed to feed it too.
    dag = layout_spec(spec("pipeline_simple_with_failure"))
    assert reached(dag)["fetch_data1"] == {"clean_data"}
    assert reached(dag)["fetch_data2"] == {"clean_data", "independent_summary"}


@pytest.mark.parametrize("name", ["pipeline_simple", "pipeline_simple_with_failure",
                                  "pipeline_simple_ml", "random_dag"])
def test_the_lines_from_each_task_of_a_seed_flow_lead_exactly_to_its_dependants(name: str) -> None:
    s = spec(name)
    nodes = [Node(t.name, t.depends_on, t.group, t.name) for t in s.tasks]
    assert reached(layout_spec(s)) == dependants(nodes)


@pytest.mark.parametrize(("n", "seed"), [(60, 1), (300, 2), (1000, 1234)])
def test_the_lines_of_a_random_flow_lead_exactly_to_the_dependants(n: int, seed: int) -> None:
    nodes = random_nodes(n, seed=seed)  # crossing edges on shared rows: doglegs are needed
    assert reached(layout(nodes)) == dependants(nodes)


def test_a_task_with_two_dependencies_has_an_arrow_from_each() -> None:
    dag = layout([Node("a"), Node("b"), Node("c", ("a", "b"))])
    box = dag.boxes["c"]
    assert box.h == 5
    lines = dag.text().splitlines()
    assert [lines[box.y + k][box.x - 1] for k in (1, 3)] == ["▶", "▶"]
    assert reached(dag) == {"a": {"c"}, "b": {"c"}, "c": set()}


def test_progress_is_drawn_as_a_bar_in_the_bottom_edge_of_the_box() -> None:
    assert progress_edge(0.4, 20) == "━━━━━━━ 40% ────────"
    assert progress_edge(1.0, 4) == "━━━━"  # too narrow for the number
    dag = layout([Node("a"), Node("long_task_name", ("a",))])
    text = dag.text(progress=lambda name: 0.5 if name == "long_task_name" else None)
    assert "╰━━━━━━ 50% ───────╯" in text and "╰─────╯" in text
