"""Flow validation and graph facts (protocol/dag.py, register_task_pipeline): pure, no NATS."""

from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowforge.pipeline import register_task_pipeline
from flowforge.registry import REGISTRY
from protocol.dag import ancestors_of, check_params, find_cycle, layers_of, validate_flow
from protocol.errors import (
    CycleError,
    DuplicateTask,
    FunctionNotImportable,
    InvalidFlow,
    InvalidOption,
    InvalidParams,
    UnknownDependency,
)
from protocol.flows import FlowSpec, ParamSpec, TaskSpec

Deps = dict[str, tuple[str, ...]]


def task(name: str, *depends_on: str, **options: Any) -> TaskSpec:
    return TaskSpec(name=name, function=f"m:{name}", depends_on=depends_on, **options)


def flow(*tasks: TaskSpec, name: str = "etl") -> FlowSpec:
    return FlowSpec(name=name, tasks=tasks)


def assert_is_cycle(path: Sequence[str], deps: Mapping[str, Sequence[str]]) -> None:
    """A real cycle: starts and ends on one task, each step is a dependency edge."""
    assert len(path) >= 2
    assert path[0] == path[-1]
    assert len(set(path[:-1])) == len(path) - 1, f"{path} repeats a task inside the cycle"
    for a, b in pairwise(path):
        assert b in deps[a], f"{a} -> {b} in {path} is not a dependency edge"


def closure(deps: Mapping[str, Sequence[str]]) -> dict[str, frozenset[str]]:
    """Brute force: everything reachable along dependency edges, by repeated expansion."""
    result: dict[str, set[str]] = {n: set(ds) for n, ds in deps.items()}
    changed = True
    while changed:
        changed = False
        for reach in result.values():
            extra = set().union(*(result[d] for d in reach)) - reach
            if extra:
                reach |= extra
                changed = True
    return {n: frozenset(r) for n, r in result.items()}


@st.composite
def acyclic_graphs(draw: st.DrawFn, max_tasks: int = 25) -> Deps:
    """Tasks t0..tn; a task depends only on tasks with a smaller number."""
    n = draw(st.integers(1, max_tasks))
    deps: Deps = {}
    for i in range(n):
        earlier = [f"t{j}" for j in range(i)]
        chosen = draw(st.lists(st.sampled_from(earlier), unique=True, max_size=4)) if earlier else []
        deps[f"t{i}"] = tuple(chosen)
    return deps


def as_flow(deps: Mapping[str, Sequence[str]], order: Sequence[str] | None = None) -> FlowSpec:
    names = order if order is not None else list(deps)
    return flow(*(task(n, *deps[n]) for n in names))


# -- the original project's own example ------------------------------------------------


def fetch_data1() -> list[int]:
    return [1, 2]


def fetch_data2() -> list[int]:
    return [3, 4]


def clean_data(fetch_data1: list[int], fetch_data2: list[int]) -> list[int]:
    return fetch_data1 + fetch_data2


def analyze_data(clean_data: list[int]) -> int:
    return sum(clean_data)


def test_a_pipeline_depending_on_an_undefined_task_names_the_missing_task_and_its_dependant() -> None:
    pipeline = {
        "fetch_data2": {"function": fetch_data2, "depends_on": []},
        "clean_data": {"function": clean_data, "depends_on": ["fetch_data1", "fetch_data2"]},
        "analyze_data": {"function": analyze_data, "depends_on": ["clean_data"]},
    }
    with pytest.raises(UnknownDependency) as err:
        register_task_pipeline(flow_name="data_pipeline", pipeline=pipeline)
    assert (err.value.task, err.value.missing) == ("clean_data", "fetch_data1")
    assert "'fetch_data1'" in str(err.value) and "'clean_data'" in str(err.value)
    assert "data_pipeline" not in REGISTRY.flows


def test_the_original_example_pipeline_registers_with_upstream_outputs_bound_by_name() -> None:
    pipeline = {
        "fetch_data1": {"function": fetch_data1, "depends_on": []},
        "fetch_data2": {"function": fetch_data2, "depends_on": []},
        "clean_data": {"function": clean_data, "depends_on": ["fetch_data1", "fetch_data2"]},
        "analyze_data": {"function": analyze_data, "depends_on": ["clean_data"]},
    }
    spec = register_task_pipeline(flow_name="data_pipeline", pipeline=pipeline)
    by_name = {t.name: t for t in spec.tasks}
    assert by_name["clean_data"].inputs == ("fetch_data1", "fetch_data2")
    assert by_name["clean_data"].function == f"{__name__}:clean_data"
    assert by_name["clean_data"].params == ()
    assert REGISTRY.flows["data_pipeline"] is spec


# -- validate_flow ----------------------------------------------------------------------


def test_an_unknown_dependency_is_reported_with_flow_task_and_missing_name() -> None:
    with pytest.raises(UnknownDependency) as err:
        validate_flow(flow(task("a"), task("b", "a", "ghost")))
    assert (err.value.flow, err.value.task, err.value.missing) == ("etl", "b", "ghost")


def test_a_cycle_is_reported_as_a_real_path_joined_by_arrows() -> None:
    spec = flow(task("start"), task("a", "start", "c"), task("b", "a"), task("c", "b"))
    with pytest.raises(CycleError) as err:
        validate_flow(spec)
    deps = {t.name: t.depends_on for t in spec.tasks}
    assert_is_cycle(err.value.path, deps)
    assert set(err.value.path) == {"a", "b", "c"}
    assert " -> ".join(err.value.path) in str(err.value)


def test_a_task_depending_on_itself_is_a_cycle_of_one() -> None:
    with pytest.raises(CycleError) as err:
        validate_flow(flow(task("a"), task("loop", "a", "loop")))
    assert err.value.path == ("loop", "loop")
    assert "loop -> loop" in str(err.value)


def test_a_task_listed_twice_in_depends_on_is_rejected() -> None:
    with pytest.raises(InvalidOption) as err:
        validate_flow(flow(task("a"), task("b", "a", "a")))
    assert (err.value.task, err.value.option) == ("b", "depends_on")


def test_a_task_defined_twice_is_rejected() -> None:
    with pytest.raises(DuplicateTask) as err:
        validate_flow(flow(task("a"), task("a")))
    assert err.value.task == "a"


@pytest.mark.parametrize("bad", ["my.flow", "my flow", "flow>", "*", "", "9lives", "a" * 129])
def test_a_flow_name_that_cannot_be_a_subject_token_is_rejected(bad: str) -> None:
    with pytest.raises(InvalidFlow, match="not valid"):
        validate_flow(flow(task("a"), name=bad))


@pytest.mark.parametrize("bad", ["fetch.data", "fetch data", "fetch>", "fetch*", ""])
def test_a_task_name_that_cannot_be_a_subject_token_is_rejected(bad: str) -> None:
    with pytest.raises(InvalidFlow, match="not valid"):
        validate_flow(flow(task(bad)))


@pytest.mark.parametrize("bad", ["gpu.big", "gpu big", "gpu>", ""])
def test_a_queue_name_that_cannot_be_a_subject_token_is_rejected(bad: str) -> None:
    with pytest.raises(InvalidOption) as err:
        validate_flow(flow(task("a", queue=bad)))
    assert err.value.option == "queue"


@pytest.mark.parametrize("good", ["etl", "_private", "ETL-2024_v2", "a" * 128])
def test_names_of_letters_digits_underscores_and_dashes_are_accepted(good: str) -> None:
    validate_flow(flow(task(good, queue=good), name=good))


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"retries": -1}, "retries"),
        ({"retry_delay_s": -0.5}, "retry_delay"),
        ({"timeout_s": 0.0}, "timeout"),
        ({"function": "no_colon"}, "function"),
        ({"params": (ParamSpec(name="n", type="decimal"),)}, "n"),
    ],
)
def test_an_out_of_range_task_option_is_rejected_naming_the_option(
    options: dict[str, Any], option: str
) -> None:
    with pytest.raises(InvalidOption) as err:
        validate_flow(flow(TaskSpec(**{"name": "a", "function": "m:a", **options})))
    assert (err.value.task, err.value.option) == ("a", option)


def test_an_input_named_like_a_task_that_is_not_upstream_is_rejected() -> None:
    with pytest.raises(InvalidOption) as err:
        validate_flow(flow(task("a"), task("b"), task("c", "a", inputs=("b",))))
    assert (err.value.task, err.value.option) == ("c", "b")


def test_an_input_from_a_transitive_ancestor_is_accepted() -> None:
    validate_flow(flow(task("a"), task("b", "a"), task("c", "b", inputs=("a", "b"))))


def test_a_flow_without_tasks_is_rejected() -> None:
    with pytest.raises(InvalidFlow, match="no tasks"):
        validate_flow(flow())


# -- check_params -----------------------------------------------------------------------


SPECS = {
    "n": ParamSpec(name="n", type="int"),
    "rate": ParamSpec(name="rate", type="float", required=False),
    "label": ParamSpec(name="label", type="str", required=False),
    "anything": ParamSpec(name="anything", required=False),
}


def test_params_of_the_declared_types_pass() -> None:
    check_params("etl", SPECS, {"n": 3, "rate": 0.5, "label": "x", "anything": [1, {"a": None}]})


def test_an_optional_parameter_may_be_left_out() -> None:
    check_params("etl", SPECS, {"n": 3})


def test_a_missing_required_parameter_is_named() -> None:
    with pytest.raises(InvalidParams, match="missing required parameter 'n'"):
        check_params("etl", SPECS, {"rate": 1.0})


def test_a_bool_is_not_accepted_as_an_int() -> None:
    with pytest.raises(InvalidParams, match="parameter 'n' must be int, got bool"):
        check_params("etl", SPECS, {"n": True})


def test_a_bool_is_not_accepted_as_a_float() -> None:
    with pytest.raises(InvalidParams, match="parameter 'rate' must be float, got bool"):
        check_params("etl", SPECS, {"n": 1, "rate": False})


def test_an_int_is_accepted_as_a_float() -> None:
    check_params("etl", SPECS, {"n": 1, "rate": 2})


def test_a_float_is_not_accepted_as_an_int() -> None:
    with pytest.raises(InvalidParams, match="must be int, got float"):
        check_params("etl", SPECS, {"n": 1.0})


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(InvalidParams) as err:
        check_params("etl", SPECS, {"label": 7})
    assert "missing required parameter 'n'" in str(err.value)
    assert "parameter 'label' must be str, got int" in str(err.value)
    assert "'etl'" in str(err.value)


@pytest.mark.parametrize(
    ("type_", "good", "bad"),
    [("str", "x", b"x"), ("bool", False, 0), ("list", [1], (1,)), ("dict", {"a": 1}, [("a", 1)])],
)
def test_each_json_type_accepts_its_own_values_only(type_: str, good: Any, bad: Any) -> None:
    specs = {"p": ParamSpec(name="p", type=type_)}
    check_params("etl", specs, {"p": good})
    with pytest.raises(InvalidParams, match=f"must be {type_}"):
        check_params("etl", specs, {"p": bad})


# -- register_task_pipeline: the pure validation in front of validate_flow -------------


def step() -> None:
    """A module-level function agents can import."""


def other_step() -> None:
    """Another one."""


def test_a_pipeline_cycle_is_named_in_the_error() -> None:
    pipeline = {
        "a": {"function": step, "depends_on": ["b"]},
        "b": {"function": other_step, "depends_on": ["a"]},
    }
    with pytest.raises(CycleError) as err:
        register_task_pipeline(flow_name="loop", pipeline=pipeline)
    assert_is_cycle(err.value.path, {"a": ["b"], "b": ["a"]})
    assert "loop" not in REGISTRY.flows


def test_a_pipeline_task_listed_twice_in_depends_on_is_rejected() -> None:
    pipeline = {"a": {"function": step}, "b": {"function": other_step, "depends_on": ["a", "a"]}}
    with pytest.raises(InvalidOption, match="more than once"):
        register_task_pipeline(flow_name="twice", pipeline=pipeline)


@pytest.mark.parametrize("bad", ["bad.name", "bad name", "bad>"])
def test_a_pipeline_with_an_invalid_flow_name_is_rejected(bad: str) -> None:
    with pytest.raises(InvalidFlow, match="not valid"):
        register_task_pipeline(flow_name=bad, pipeline={"a": {"function": step}})


@pytest.mark.parametrize("bad", ["bad.name", "bad name", "bad>"])
def test_a_pipeline_with_an_invalid_task_name_is_rejected(bad: str) -> None:
    with pytest.raises(InvalidFlow, match="not valid"):
        register_task_pipeline(flow_name="etl", pipeline={bad: {"function": step}})


def test_a_pipeline_with_an_invalid_queue_name_is_rejected() -> None:
    with pytest.raises(InvalidOption, match="queue"):
        register_task_pipeline(flow_name="etl", pipeline={"a": {"function": step, "queue": "gpu.0"}})


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"retries": -1}, "must be 0 or more"),
        ({"retries": True}, "must be int, got bool"),
        ({"retries": 1.5}, "must be int, got float"),
        ({"retry_delay": "5s"}, "must be int or float, got str"),
        ({"depends_on": "a"}, "must be list or tuple, got str"),
        ({"colour": "red"}, "unknown option"),
    ],
)
def test_a_pipeline_option_of_the_wrong_type_or_range_is_rejected(
    options: dict[str, Any], match: str
) -> None:
    with pytest.raises(InvalidOption, match=match):
        register_task_pipeline(flow_name="etl", pipeline={"a": {"function": step, **options}})


def test_a_pipeline_task_without_a_function_is_rejected() -> None:
    with pytest.raises(InvalidOption, match=r"'function'.*is required"):
        register_task_pipeline(flow_name="etl", pipeline={"a": {"depends_on": []}})


def test_a_lambda_is_rejected_because_agents_cannot_import_it() -> None:
    with pytest.raises(FunctionNotImportable, match="lambda"):
        register_task_pipeline(flow_name="etl", pipeline={"a": {"function": lambda: 1}})


def test_a_nested_function_is_rejected_because_agents_cannot_import_it() -> None:
    def inner() -> None:
        pass

    with pytest.raises(FunctionNotImportable, match="module level"):
        register_task_pipeline(flow_name="etl", pipeline={"a": {"function": inner}})


def test_a_parameter_named_like_a_task_that_is_not_upstream_is_rejected() -> None:
    pipeline = {
        "fetch_data1": {"function": fetch_data1},
        "fetch_data2": {"function": fetch_data2},
        "clean_data": {"function": clean_data, "depends_on": ["fetch_data2"]},
    }
    with pytest.raises(InvalidOption, match=r"'fetch_data1'.*not upstream of 'clean_data'"):
        register_task_pipeline(flow_name="etl", pipeline=pipeline)


# -- properties -------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(graph=acyclic_graphs(), data=st.data())
def test_an_acyclic_graph_always_validates_and_has_no_cycle(graph: Deps, data: st.DataObject) -> None:
    order = data.draw(st.permutations(list(graph)))
    assert find_cycle(graph) is None
    validate_flow(as_flow(graph, order))


@settings(max_examples=200, deadline=None)
@given(graph=acyclic_graphs(), data=st.data())
def test_a_back_edge_closing_a_path_makes_find_cycle_return_a_real_cycle(
    graph: Deps, data: st.DataObject
) -> None:
    ancestors = closure(graph)
    pairs = [(low, high) for high in graph for low in ancestors[high]]
    if not pairs:
        pairs = [(n, n) for n in graph]  # no edges at all: a self-loop is the only back-edge
    low, high = data.draw(st.sampled_from(pairs))
    # high depends (transitively) on low; now low depends on high as well
    cyclic = {**graph, low: (*graph[low], high)}
    order = data.draw(st.permutations(list(cyclic)))
    cycle = find_cycle({n: cyclic[n] for n in order})
    assert cycle is not None
    assert_is_cycle(cycle, cyclic)
    assert (low, high) in pairwise(cycle), "every cycle uses the new edge"
    with pytest.raises(CycleError) as err:
        validate_flow(as_flow(cyclic, order))
    assert_is_cycle(err.value.path, cyclic)


@settings(max_examples=200, deadline=None)
@given(graph=acyclic_graphs(), data=st.data())
def test_ancestors_of_equals_the_transitive_closure(graph: Deps, data: st.DataObject) -> None:
    order = data.draw(st.permutations(list(graph)))
    assert ancestors_of({n: graph[n] for n in order}) == closure(graph)


def longest_from_a_root(graph: Deps) -> dict[str, int]:
    """Brute force: the most edges on any path down from a task to one without dependencies."""
    def longest(name: str) -> int:
        return max((1 + longest(d) for d in graph[name]), default=0)

    return {n: longest(n) for n in graph}


@settings(max_examples=200, deadline=None)
@given(graph=acyclic_graphs(max_tasks=12), data=st.data())
def test_layers_of_is_the_longest_path_from_a_root(graph: Deps, data: st.DataObject) -> None:
    order = data.draw(st.permutations(list(graph)))
    assert layers_of({n: graph[n] for n in order}) == longest_from_a_root(graph)


def test_layers_of_ignores_dependencies_outside_the_graph() -> None:
    assert layers_of({"a": ("elsewhere",), "b": ("a", "gone")}) == {"a": 0, "b": 1}


def test_find_cycle_starts_the_cycle_at_its_first_defined_task() -> None:
    assert find_cycle({"x": (), "b": ("c",), "c": ("a",), "a": ("b",)}) == ["b", "c", "a", "b"]
