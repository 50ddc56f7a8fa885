"""Registering flows: every bad definition is refused with a clear error naming the offender.

The same mistakes are checked from the Python API (``register_task_pipeline`` and the ``Flow``
decorator form) and from ``flowforge register FILE`` as a subprocess, which must exit 2 with
the message on stderr and store nothing.
"""

import asyncio
import json
import re
import subprocess
import textwrap
import types
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS

from coordinator.service import Coordinator
from flowforge import (
    CycleError,
    Flow,
    FlowForgeError,
    FunctionNotImportable,
    InvalidFlow,
    InvalidOption,
    UnknownDependency,
    register_task_pipeline,
)
from flowforge.client import Client
from flowforge.embedded import EmbeddedNats
from flowforge.registry import REGISTRY
from protocol.errors import ErrorCode, FlowExists, RemoteError
from protocol.flows import FlowSpec, TaskSpec
from protocol.messages import encoder
from tests.helpers import on_shared_stack, run_cli, wait_for


@pytest.fixture
async def nc(nats_server: EmbeddedNats) -> AsyncIterator[NATS]:
    conn = await nats.connect(nats_server.url)
    yield conn
    await conn.drain()


# Module-level functions: importable by agents, so only the mistake under test is wrong.


def fetch_data2() -> dict:
    return {"rows": [1, 2]}


def clean_data(fetch_data1: dict, fetch_data2: dict) -> dict:
    return {"rows": fetch_data1["rows"] + fetch_data2["rows"]}


def step_a() -> int:
    return 1


def step_b() -> int:
    return 2


def step_c() -> int:
    return 3


def _raises(exc_type: type[FlowForgeError], fragments: list[str],
            define: Callable[[], Any]) -> FlowForgeError:
    with pytest.raises(exc_type) as info:
        define()
    for fragment in fragments:
        assert fragment in str(info.value), f"{fragment!r} not in {str(info.value)!r}"
    return info.value


# -- the Python API ----------------------------------------------------------------------


def test_the_original_example_with_an_undefined_fetch_data1_names_it() -> None:
    err = _raises(UnknownDependency, ["'clean_data'", "'fetch_data1'", "depends_on"], lambda: (
        register_task_pipeline(flow_name="pipeline_simple", pipeline={
            "fetch_data2": {"function": fetch_data2, "depends_on": []},
            "clean_data": {"function": clean_data, "depends_on": ["fetch_data1", "fetch_data2"]},
        })
    ))
    assert isinstance(err, UnknownDependency) and err.missing == "fetch_data1"


def test_a_cycle_is_refused_with_the_path_around_it() -> None:
    err = _raises(CycleError, ["'loop'", "a -> c -> b -> a"], lambda: register_task_pipeline(
        flow_name="loop", pipeline={
            "a": {"function": step_a, "depends_on": ["c"]},
            "b": {"function": step_b, "depends_on": ["a"]},
            "c": {"function": step_c, "depends_on": ["b"]},
        },
    ))
    assert isinstance(err, CycleError) and err.path == ("a", "c", "b", "a")


def test_a_task_that_depends_on_itself_is_a_cycle_of_one() -> None:
    _raises(CycleError, ["me -> me"], lambda: register_task_pipeline(
        flow_name="selfish", pipeline={"me": {"function": step_a, "depends_on": ["me"]}},
    ))


def test_a_duplicate_task_name_in_the_decorator_form_names_the_task() -> None:
    flow = Flow("dups")
    flow.task(step_a, name="same")
    _raises(InvalidFlow, ["'dups'", "'same'", "defined twice"],
            lambda: flow.task(step_b, name="same"))


def test_a_duplicate_function_name_in_the_decorator_form_is_refused_too() -> None:
    flow = Flow("dups")
    flow.task(step_a)
    _raises(InvalidFlow, ["'step_a'", "defined twice"], lambda: flow.task()(step_a))


def test_a_lambda_is_refused_because_agents_cannot_import_it() -> None:
    _raises(FunctionNotImportable, ["'anon'", "'t'", "lambda", "module-level def"],
            lambda: register_task_pipeline(
                flow_name="anon", pipeline={"t": {"function": lambda: 1, "depends_on": []}},
            ))


def test_a_closure_is_refused_and_its_qualified_name_shown() -> None:
    def inner() -> int:
        return 1

    _raises(FunctionNotImportable, ["'nested'", "'t'", "<locals>.inner", "module level"],
            lambda: register_task_pipeline(
                flow_name="nested", pipeline={"t": {"function": inner, "depends_on": []}},
            ))


def test_a_function_defined_in_main_is_refused_with_advice() -> None:
    in_main = types.FunctionType(step_a.__code__, step_a.__globals__, "in_main")
    in_main.__qualname__ = "in_main"
    in_main.__module__ = "__main__"
    _raises(FunctionNotImportable, ["'t'", "in_main", "__main__", "flowforge dev"],
            lambda: register_task_pipeline(
                flow_name="mainly", pipeline={"t": {"function": in_main, "depends_on": []}},
            ))


def test_something_that_is_not_a_function_is_refused() -> None:
    _raises(FunctionNotImportable, ["'t'", "must be a function", "42"],
            lambda: register_task_pipeline(
                flow_name="notfn", pipeline={"t": {"function": 42, "depends_on": []}},
            ))


@pytest.mark.parametrize(("option", "value", "fragments"), [
    ("queue", 5, ["'queue'", "must be str, got int"]),
    ("depends_on", "a", ["'depends_on'", "must be list or tuple, got str"]),
    ("retries", "x", ["'retries'", "must be int, got str"]),
    ("retries", True, ["'retries'", "must be int, got bool"]),
    ("timeout", "10s", ["'timeout'", "must be int or float, got str"]),
    ("retry", 3, ["'retry'", "unknown option", "retries"]),
])
def test_an_option_of_the_wrong_type_or_an_unknown_option_names_task_and_option(
    option: str, value: object, fragments: list[str]
) -> None:
    _raises(InvalidOption, ["'typed'", "'t'", *fragments], lambda: register_task_pipeline(
        flow_name="typed", pipeline={"t": {"function": step_a, "depends_on": [], option: value}},
    ))


def test_a_wrongly_typed_option_in_the_decorator_form_is_refused_at_register() -> None:
    flow = Flow("decorated")
    flow.task(step_a, queue=5)
    _raises(InvalidOption, ["'decorated'", "'step_a'", "'queue'", "must be str"], flow.register)


def test_a_refused_definition_leaves_nothing_registered_in_the_process() -> None:
    with pytest.raises(InvalidFlow):
        register_task_pipeline(flow_name="half", pipeline={
            "ok": {"function": step_a, "depends_on": []},
            "bad": {"function": step_b, "depends_on": ["missing"]},
        })
    assert "half" not in REGISTRY.flows


def test_redefining_a_flow_differently_in_one_process_without_clearing_is_refused() -> None:
    register_task_pipeline(flow_name="keep", pipeline={"a": {"function": step_a}},
                           clear_existing_flow_in_db=False)
    _raises(FlowExists, ["'keep'", "clear_existing_flow_in_db=True"],
            lambda: register_task_pipeline(flow_name="keep",
                                           pipeline={"b": {"function": step_b}},
                                           clear_existing_flow_in_db=False))


# -- the coordinator -------------------------------------------------------------------------


def _spec(name: str, *tasks: tuple[str, tuple[str, ...]]) -> FlowSpec:
    return FlowSpec(name=name, tasks=tuple(
        TaskSpec(name=t, function=f"tests.test_registration:step_{t}", depends_on=deps)
        for t, deps in tasks
    ))


@on_shared_stack
async def test_the_coordinator_refuses_a_changed_definition_without_replace_with_flow_exists(
    shared_client: Client,
) -> None:
    first = _spec("guarded", ("a", ()))
    changed = _spec("guarded", ("a", ()), ("b", ("a",)))
    await shared_client.register([first])

    with pytest.raises(RemoteError) as info:
        await shared_client.register([changed], replace=False)

    assert info.value.code is ErrorCode.FLOW_EXISTS
    assert "'guarded'" in info.value.message
    assert (await shared_client.flow("guarded")).version == first.version()
    same = await shared_client.register([first], replace=False)
    assert [(r.name, r.changed) for r in same] == [("guarded", False)]
    replaced = await shared_client.register([changed], replace=True)
    assert [(r.name, r.version, r.changed) for r in replaced] == [
        ("guarded", changed.version(), True)
    ]


@on_shared_stack
async def test_clear_existing_flow_in_db_false_is_honoured_when_the_sdk_registers(
    shared_client: Client,
) -> None:
    await shared_client.register([_spec("legacy", ("a", ()))])
    spec = register_task_pipeline(
        flow_name="legacy", clear_existing_flow_in_db=False,
        pipeline={"b": {"function": step_b, "depends_on": []}},
    )

    with pytest.raises(RemoteError) as info:
        await shared_client.register([spec])

    assert info.value.code is ErrorCode.FLOW_EXISTS
    assert [t.name for t in (await shared_client.flow("legacy")).spec.tasks] == ["a"]


@on_shared_stack
@pytest.mark.parametrize(("spec", "fragments"), [
    (_spec("cyclic", ("a", ("b",)), ("b", ("a",))), ["'cyclic'", "a -> b -> a"]),
    (_spec("dangling", ("a", ("zzz",))), ["'dangling'", "'a'", "'zzz'"]),
    (_spec("twice", ("a", ()), ("a", ())), ["'twice'", "'a'", "defined twice"]),
    (_spec("bad name!", ("a", ())), ["'bad name!'", "not valid"]),
], ids=["cycle", "unknown-dependency", "duplicate", "bad-name"])
async def test_the_coordinator_validates_definitions_it_is_sent_and_stores_none_of_a_bad_batch(
    shared_client: Client, spec: FlowSpec, fragments: list[str]
) -> None:
    good = _spec("good_beside_" + re.sub(r"[^A-Za-z0-9_-]", "", spec.name), ("a", ()))
    before = await shared_client.flows()

    with pytest.raises(RemoteError) as info:
        await shared_client.register([good, spec])

    assert info.value.code is ErrorCode.INVALID_FLOW
    for fragment in fragments:
        assert fragment in info.value.message
    assert await shared_client.flows() == before


# -- the CLI -----------------------------------------------------------------------------------


async def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``run_cli`` off the event loop, which the in-process coordinator needs to answer."""
    return await asyncio.to_thread(run_cli, args, env=env)

_HEADER = '''\
from flowforge import Flow, register_task_pipeline


def a():
    return 1


def b():
    return 2


def c():
    return 3


'''

BAD_MODULES: dict[str, tuple[str, list[str]]] = {
    "unknown_dependency": ('''
        def fetch_data2():
            return {"rows": [1]}


        def clean_data(fetch_data1, fetch_data2):
            return {}


        register_task_pipeline(flow_name="pipeline_simple", pipeline={
            "fetch_data2": {"function": fetch_data2, "depends_on": []},
            "clean_data": {"function": clean_data, "depends_on": ["fetch_data1", "fetch_data2"]},
        })
        ''', ["'pipeline_simple'", "'clean_data'", "'fetch_data1'"]),
    "cycle": ('''
        register_task_pipeline(flow_name="loop", pipeline={
            "a": {"function": a, "depends_on": ["c"]},
            "b": {"function": b, "depends_on": ["a"]},
            "c": {"function": c, "depends_on": ["b"]},
        })
        ''', ["'loop'", "cycle", "a -> c -> b -> a"]),
    "duplicate_in_decorator_form": ('''
        flow = Flow("dups")
        flow.task(a, name="same")
        flow.task(b, name="same")
        flow.register()
        ''', ["'dups'", "'same'", "defined twice"]),
    "lambda": ('''
        register_task_pipeline(flow_name="anon", pipeline={"t": {"function": lambda: 1}})
        ''', ["'anon'", "'t'", "lambda"]),
    "closure": ('''
        def make():
            def inner():
                return 1
            return inner


        register_task_pipeline(flow_name="nested", pipeline={"t": {"function": make()}})
        ''', ["'nested'", "'t'", "make.<locals>.inner", "module level"]),
    "defined_in_main": ('''
        a.__module__ = "__main__"
        register_task_pipeline(flow_name="mainly", pipeline={"t": {"function": a}})
        ''', ["'mainly'", "'t'", "__main__"]),
    "queue_not_a_string": ('''
        register_task_pipeline(flow_name="typed", pipeline={"t": {"function": a, "queue": 5}})
        ''', ["'typed'", "'t'", "'queue'", "must be str, got int"]),
    "depends_on_a_string": ('''
        register_task_pipeline(flow_name="typed", pipeline={
            "a": {"function": a}, "t": {"function": b, "depends_on": "a"},
        })
        ''', ["'t'", "'depends_on'", "must be list or tuple, got str"]),
    "retries_not_an_int": ('''
        register_task_pipeline(flow_name="typed", pipeline={"t": {"function": a, "retries": "x"}})
        ''', ["'t'", "'retries'", "must be int, got str"]),
    "unknown_option": ('''
        register_task_pipeline(flow_name="typed", pipeline={"t": {"function": a, "retry": 3}})
        ''', ["'t'", "'retry'", "unknown option"]),
    "good_flow_then_bad_flow": ('''
        register_task_pipeline(flow_name="fine", pipeline={"a": {"function": a}})
        register_task_pipeline(flow_name="broken", pipeline={
            "b": {"function": b, "depends_on": ["nope"]},
        })
        ''', ["'broken'", "'nope'"]),
}


@on_shared_stack
@pytest.mark.parametrize("case", list(BAD_MODULES))
async def test_flowforge_register_of_a_bad_module_exits_2_names_the_offender_and_stores_nothing(
    case: str, shared_client: Client, shared_cli_env: dict[str, str], tmp_path: Path
) -> None:
    body, fragments = BAD_MODULES[case]
    module = tmp_path / f"bad_{case}.py"
    module.write_text(_HEADER + textwrap.dedent(body))
    before = await shared_client.flows()

    result = await _cli(["flowforge", "register", str(module)], shared_cli_env)

    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("flowforge register: ")
    for fragment in fragments:
        assert fragment in result.stderr, f"{fragment!r} not in {result.stderr!r}"
    assert "Traceback" not in result.stderr
    assert await shared_client.flows() == before


@on_shared_stack
async def test_flowforge_register_of_a_missing_file_exits_2_and_names_it(
    shared_cli_env: dict[str, str], tmp_path: Path
) -> None:
    missing = tmp_path / "no_such_flows.py"

    result = await _cli(["flowforge", "register", str(missing)], shared_cli_env)

    assert result.returncode == 2
    assert str(missing) in result.stderr and "no such file" in result.stderr


@pytest.mark.parametrize(("target", "expected"), [
    ("tests/taskflows.py", {"random_dag", "wide", "routing", "bad_outputs"}),
    ("examples.seed_pipelines", {"pipeline_simple", "pipeline_simple_with_failure",
                                 "parallel_pipelines", "pipeline_simple_ml"}),
])
async def test_flowforge_register_of_a_good_module_stores_its_flows_and_again_changes_nothing(
    target: str, expected: set[str], coordinator: Coordinator, client: Client,
    cli_env: dict[str, str]
) -> None:
    first = await _cli(["flowforge", "register", target], cli_env)
    assert first.returncode == 0, first.stderr

    stored = {f.name for f in await client.flows()}
    assert expected <= stored  # other flows may be added to these modules over time
    assert first.stdout.count(" registered") == len(stored)
    again = await _cli(["flowforge", "register", target], cli_env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count(" unchanged") == len(stored)
    assert {f.name for f in await client.flows()} == stored


async def test_registering_flows_while_runs_are_being_started_neither_fails(
    coordinator: Coordinator, client: Client
) -> None:
    await client.register([_spec("busy", ("a", ()))])
    specs = [_spec(f"more{i}", ("a", ())) for i in range(20)]

    results = await asyncio.gather(
        *(client.start("busy") for _ in range(40)),
        *(client.register([spec]) for spec in specs),
        return_exceptions=True,
    )

    assert [r for r in results if isinstance(r, BaseException)] == []
    assert len(await client.flows()) == 21
    assert len(await client.runs(flow="busy")) == 40


async def test_a_registration_in_flight_when_the_coordinator_shuts_down_is_answered_and_stored(
    start_coordinator: Callable[..., Awaitable[Coordinator]], client: Client, nc: NATS,
    tmp_path: Path,
) -> None:
    db_path = tmp_path / "shutdown.db"
    first = await start_coordinator(db_path=db_path)
    specs = [  # each new queue costs the coordinator JetStream calls: a slow request
        FlowSpec(name=f"q{i}", tasks=(TaskSpec(name="a", function="m:a", queue=f"q{i}"),))
        for i in range(40)
    ]
    pending = asyncio.ensure_future(nc.request(
        "flowforge.api.flows.register", encoder.encode({"flows": specs}), timeout=20
    ))
    await wait_for(lambda: bool(first._api._inflight))  # the coordinator is handling it

    await first.shutdown()

    reply = json.loads((await pending).data)
    assert reply["ok"] is True, reply
    await start_coordinator(db_path=db_path)
    assert len(await client.flows()) == len(specs)


def test_a_context_parameter_is_found_by_its_annotation_under_postponed_annotations() -> None:
    from agent.binding import BindPlan
    from flowforge.introspect import bind_plan
    from tests import futureflows

    plan = BindPlan.of(futureflows.step)
    assert plan.slots[0] == ("context", 0, False)
    params, _, _ = bind_plan("f", "step", futureflows.step, {"step"})
    assert [p.name for p in params] == ["n"] and params[0].type == "int"


def test_flow_wide_defaults_apply_to_tasks_that_do_not_set_their_own() -> None:
    from tests import inputflows

    spec = register_task_pipeline(
        flow_name="with_defaults", defaults={"retries": 2, "retry_delay": 1.5, "timeout": 30},
        pipeline={
            "a": {"function": inputflows.noop, "depends_on": []},
            "b": {"function": inputflows.noop, "depends_on": ["a"], "retries": 0},
        },
    )
    a, b = spec.tasks
    assert (a.retries, a.retry_delay_s, a.timeout_s) == (2, 1.5, 30.0)
    assert (b.retries, b.retry_delay_s, b.timeout_s) == (0, 1.5, 30.0)


def test_an_option_that_cannot_be_a_flow_wide_default_is_refused_by_name() -> None:
    from tests import inputflows

    with pytest.raises(InvalidOption, match=r"defaults\.depends_on"):
        register_task_pipeline(flow_name="bad_defaults", defaults={"depends_on": ["x"]},
                               pipeline={"a": {"function": inputflows.noop}})
