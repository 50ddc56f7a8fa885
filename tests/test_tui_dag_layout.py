"""The DAG layout: layers left to right, boxes and connectors, groups framed, big flows laid out."""

from tests.test_tui_support import spec
from tui.dag_layout import Node, layout, layout_spec
from tui.layout_bench import random_nodes


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
    assert text.count("▶") == 3  # one arrow into each task that waits for others
    assert "some_post_process_funct…" in text  # long labels are cut


def test_boxes_never_overlap_and_stay_on_the_canvas() -> None:
    dag = layout(random_nodes(300))
    cells: set[tuple[int, int]] = set()
    for box in dag.boxes.values():
        assert box.x >= 0 and box.x + box.w <= dag.width and box.y >= 0 and box.y + 3 <= dag.height
        area = {(x, y) for x in range(box.x, box.x + box.w) for y in range(box.y, box.y + 3)}
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
