"""Exports of a flow's DAG: Mermaid and Graphviz dot, plain and coloured by a run."""

from flowforge.graphs import COLOURS, dot, mermaid
from flowforge.registry import REGISTRY
from protocol.states import TaskStatus
from tests import inputflows


def _spec():
    inputflows.load_seed_pipelines()
    return REGISTRY.flows["pipeline_simple_with_failure"]


def test_mermaid_has_every_task_and_every_edge_left_to_right() -> None:
    spec = _spec()
    text = mermaid(spec)
    assert text.startswith("flowchart LR")
    ids = {t.name: f"t{i}" for i, t in enumerate(spec.tasks)}
    for t in spec.tasks:
        assert f'{ids[t.name]}["{t.name}' in text
        for dep in t.depends_on:
            assert f"  {ids[dep]} --> {ids[t.name]}" in text


def test_mermaid_coloured_by_a_run_puts_each_task_in_its_state_class() -> None:
    spec = _spec()
    states = {t.name: TaskStatus.SUCCEEDED for t in spec.tasks}
    states["faulty_transform"] = TaskStatus.FAILED
    text = mermaid(spec, states)
    fill, _ = COLOURS[TaskStatus.FAILED]
    assert f"classDef failed fill:{fill}" in text
    assert "class t3 failed" in text  # faulty_transform is the fourth task


def test_dot_is_a_digraph_with_edges_grouped_clusters_and_state_colours() -> None:
    inputflows.load_seed_pipelines()
    spec = REGISTRY.flows["pipeline_simple"]
    text = dot(spec, {"clean_data": TaskStatus.RUNNING})
    assert text.startswith('digraph "pipeline_simple" {') and text.rstrip().endswith("}")
    assert '"fetch_data1" -> "clean_data";' in text
    assert "subgraph cluster_0" in text and '"some_post_process_function"' in text
    assert f'fillcolor="{COLOURS[TaskStatus.RUNNING][0]}"' in text
