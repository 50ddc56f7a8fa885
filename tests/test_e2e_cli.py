"""End to end with the real console scripts: coordinator, agents and the CLI as subprocesses."""

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from flowforge.embedded import EmbeddedNats
from tests.helpers import (
    REPO,
    TEARDOWN_GRACE_S,
    Proc,
    coordinator_answers,
    env_for,
    free_port,
    on_shared_stack,
    wait_for,
)
from tests.helpers import flowforge_cli as cli

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Stack:
    """A coordinator and two agents (default, gpu) as subprocesses, the example flows registered."""

    env: dict[str, str]
    """For console scripts: the stack's NATS."""
    db: Path
    coordinator: Proc
    procs: list[Proc]


async def _start_stack(spawn: Callable[..., Proc], env: dict[str, str], db: Path) -> Stack:
    coordinator = spawn("flowforge-coordinator", "--db", str(db))
    procs = [coordinator]
    await wait_for(lambda: coordinator_answers(env["FLOWFORGE_NATS_URL"]), timeout_s=20)
    procs.append(spawn("flowforge-agent", "--queue", "default",
                       "--import", "examples.seed_pipelines"))
    procs.append(spawn("flowforge-agent", "--queue", "gpu", "--import", "examples/seed_pipelines.py"))
    registered = await cli(env, "register", "examples.seed_pipelines")
    assert registered.returncode == 0, registered.stderr
    return Stack(env, db, coordinator, procs)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def _shared_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """One stack for the tests that only run flows and read: each looks at runs of its own."""
    root = tmp_path_factory.mktemp("e2e")
    server = EmbeddedNats(root / "nats", port=-1)
    await server.start()
    env = env_for(server.url)
    procs: list[Proc] = []

    def spawn(*args: str) -> Proc:
        procs.append(Proc(list(args), root / f"{len(procs)}-{args[0]}.log", env, REPO))
        return procs[-1]

    try:
        yield await _start_stack(spawn, env, root / "ff.db")
    finally:
        for proc in reversed(procs):
            proc.stop()
        await server.stop(grace_s=TEARDOWN_GRACE_S)


@pytest.fixture
def stack(_shared_stack: Stack, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """The shared stack (tests using it are marked ``on_shared_stack``); its processes' logs
    are printed if the test fails."""
    yield _shared_stack
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for proc in _shared_stack.procs:
            print(f"--- {' '.join(proc.args)} ---\n{proc.log()}")


@pytest.fixture
async def own_stack(spawn: Callable[..., Proc], cli_env: dict[str, str], tmp_path: Path) -> Stack:
    """A stack of the test's own, for a test that stops or restarts one of its processes."""
    return await _start_stack(spawn, cli_env, tmp_path / "ff.db")


@pytest.mark.parametrize("flow", ["pipeline_simple", "parallel_pipelines", "pipeline_simple_ml"])
@on_shared_stack
async def test_each_example_flow_runs_end_to_end_and_show_prints_its_outputs(
    stack: Stack, flow: str
) -> None:
    done = await cli(stack.env, "run", flow, "--param", "n_rows=50", "--wait", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    detail = json.loads(done.stdout)
    assert detail["run"]["status"] == "succeeded"
    assert all(t["status"] == "succeeded" for t in detail["tasks"])

    shown = await cli(stack.env, "show", detail["run"]["run_id"])
    assert shown.returncode == 0
    assert "SUCCEEDED" in shown.stdout
    for task in detail["tasks"]:
        assert task["task"] in shown.stdout
    if flow == "pipeline_simple_ml":
        train = next(t for t in detail["tasks"] if t["task"] == "train_model")
        assert train["output"]["algorithm"] == "linear_regression_gd"
        assert '"algorithm":"linear_regression_gd"' in shown.stdout


@on_shared_stack
async def test_the_failing_example_reports_type_message_traceback_and_run_wait_exits_1(
    stack: Stack
) -> None:
    done = await cli(stack.env, "run", "pipeline_simple_with_failure", "--wait", "--json")
    assert done.returncode == 1
    detail = json.loads(done.stdout)
    tasks = {t["task"]: t for t in detail["tasks"]}
    assert detail["run"]["status"] == "failed"
    assert tasks["faulty_transform"]["status"] == "failed"
    assert tasks["faulty_transform"]["error_type"] == "NameError"
    assert "undefined_variable" in tasks["faulty_transform"]["error_message"]
    assert "faulty_transform" in tasks["faulty_transform"]["traceback"]
    assert tasks["publish_results"]["status"] == "upstream_failed"
    assert tasks["independent_summary"]["status"] == "succeeded"

    shown = await cli(stack.env, "show", detail["run"]["run_id"])
    assert "NameError: name 'undefined_variable' is not defined" in shown.stdout
    assert "Traceback" in shown.stdout


@on_shared_stack
async def test_run_without_wait_prints_the_run_id_as_json(stack: Stack) -> None:
    started = await cli(stack.env, "run", "pipeline_simple", "--json")
    assert started.returncode == 0
    assert json.loads(started.stdout)["run_id"]


async def test_flows_and_runs_survive_a_restart_of_the_coordinator(
    own_stack: Stack, spawn: Callable[..., Proc], nats_server: EmbeddedNats
) -> None:
    done = await cli(own_stack.env, "run", "pipeline_simple", "--wait", "--json")
    run_id = json.loads(done.stdout)["run"]["run_id"]
    assert own_stack.coordinator.stop() == 0

    spawn("flowforge-coordinator", "--db", str(own_stack.db))
    await wait_for(lambda: coordinator_answers(nats_server.url), timeout_s=20)
    flows = json.loads((await cli(own_stack.env, "flows", "--json")).stdout)
    assert {f["name"] for f in flows} >= {"pipeline_simple", "pipeline_simple_ml"}
    runs = json.loads((await cli(own_stack.env, "runs", "--json")).stdout)
    assert run_id in {r["run_id"] for r in runs}
    again = await cli(own_stack.env, "run", "pipeline_simple", "--wait")
    assert again.returncode == 0


@on_shared_stack
async def test_runs_filters_by_flow_and_status_and_graph_draws_the_dag(stack: Stack) -> None:
    bad = await cli(stack.env, "run", "pipeline_simple_with_failure", "--wait", "--json")
    good = await cli(stack.env, "run", "parallel_pipelines", "--wait", "--json")
    bad_id, good_id = (json.loads(done.stdout)["run"]["run_id"] for done in (bad, good))
    failed = json.loads((await cli(stack.env, "runs", "--status", "failed", "--json")).stdout)
    assert bad_id in {r["run_id"] for r in failed}  # others' runs too: the stack is shared
    assert {r["flow"] for r in failed} == {"pipeline_simple_with_failure"}
    listed = await cli(stack.env, "runs", "--flow", "parallel_pipelines")
    assert good_id in listed.stdout
    assert "pipeline_simple_with_failure" not in listed.stdout

    graph = await cli(stack.env, "graph", "pipeline_simple")
    assert graph.returncode == 0
    assert "[clean_data]" in graph.stdout
    assert "◄── fetch_data1, fetch_data2" in graph.stdout


async def test_cli_commands_exit_3_with_a_clear_message_when_nothing_answers(tmp_path) -> None:
    env = {**(await asyncio.to_thread(dict, __import__("os").environ)),
           "FLOWFORGE_NATS_URL": "nats://127.0.0.1:1"}
    result = await cli(env, "runs")
    assert result.returncode == 3  # as the services: 3 is "cannot reach NATS"
    assert "cannot reach NATS at nats://127.0.0.1:1" in result.stderr
    assert "start one with `flowforge-coordinator`" in result.stderr


async def test_dev_runs_a_flow_headless_and_exits_0_or_1_with_a_summary(tmp_path, cli_env) -> None:
    args = ["dev", "examples/seed_pipelines.py", "--headless", "--data-dir", str(tmp_path / "d"),
            "--listen", "127.0.0.1:-1"]
    ok = await cli(cli_env, *args, "--run", "pipeline_simple")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "some_post_process_function" in ok.stdout
    assert "succeeded" in ok.stdout
    assert "run " in ok.stdout and " succeeded in " in ok.stdout

    bad = await cli(cli_env, *args, "--run", "pipeline_simple_with_failure")
    assert bad.returncode == 1
    assert "NameError" in bad.stdout
    assert (tmp_path / "d" / "flowforge.db").is_file()


async def test_dev_runs_the_mapping_example_and_lists_its_failed_instance(
    tmp_path, cli_env
) -> None:
    result = await cli(cli_env, "dev", "examples/mapping.py", "--headless", "--data-dir",
                       str(tmp_path / "d"), "--listen", "127.0.0.1:-1", "--run", "files_fan")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "── count_rows (mapped) instances: 1 failed, 7 succeeded of 8 items" in result.stdout
    assert "part-00005.csv: truncated gzip stream" in result.stdout


async def test_a_standalone_coordinator_starts_its_embedded_nats_server(
    spawn, tmp_path, cli_env
) -> None:
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    proc = spawn("flowforge-coordinator", "--listen", f"127.0.0.1:{port}",
                 "--data-dir", str(tmp_path / "data"), env={"FLOWFORGE_NATS_URL": ""})
    await wait_for(lambda: coordinator_answers(url), timeout_s=20)
    assert "embedded nats-server listening on " + url in proc.log()
    assert (tmp_path / "data" / "flowforge.db").is_file()


@on_shared_stack
async def test_a_misspelt_parameter_is_refused_naming_the_ones_the_flow_takes(
    stack: Stack
) -> None:
    result = await cli(stack.env, "run", "pipeline_simple", "--param", "n_row=5", "--wait")
    assert result.returncode == 2
    assert "unknown parameter 'n_row' (the flow takes n_rows)" in result.stderr


async def test_dev_reports_a_bad_parameter_as_a_usage_error_without_a_traceback(
    tmp_path, cli_env
) -> None:
    result = await cli(cli_env, "dev", "examples/seed_pipelines.py", "--headless",
                       "--data-dir", str(tmp_path / "d"), "--listen", "127.0.0.1:-1",
                       "--run", "pipeline_simple", "--param", "n_rows=many")
    assert result.returncode == 2
    assert "parameter 'n_rows' must be int, got str" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@on_shared_stack
async def test_operators_mark_retry_and_cancel_from_the_cli(stack: Stack) -> None:
    failed = json.loads((await cli(stack.env, "run", "pipeline_simple_with_failure", "--wait",
                                   "--json")).stdout)
    run_id = failed["run"]["run_id"]

    marked = await cli(stack.env, "mark", run_id, "faulty_transform", "succeeded",
                       "--output", '{"value": 1}')
    assert marked.returncode == 0, marked.stderr
    assert "faulty_transform of run" in marked.stdout and "succeeded" in marked.stdout

    async def finished_ok() -> bool:
        shown = json.loads((await cli(stack.env, "show", run_id, "--json")).stdout)
        return shown["run"]["status"] == "succeeded"

    await wait_for(finished_ok, timeout_s=30)
    shown = json.loads((await cli(stack.env, "show", run_id, "--json")).stdout)
    tasks = {t["task"]: t for t in shown["tasks"]}
    assert tasks["publish_results"]["status"] == "succeeded"

    again = await cli(stack.env, "retry", run_id)
    assert again.returncode == 2
    assert "no failed, cancelled or upstream_failed task" in again.stderr
    cancel = await cli(stack.env, "cancel", run_id)
    assert cancel.returncode == 2
    assert "already succeeded" in cancel.stderr


@on_shared_stack
async def test_graph_exports_mermaid_and_dot_coloured_by_a_run(stack: Stack) -> None:
    done = json.loads((await cli(stack.env, "run", "pipeline_simple_with_failure", "--wait",
                                 "--json")).stdout)
    run_id = done["run"]["run_id"]
    dot = await cli(stack.env, "graph", "pipeline_simple_with_failure", "--format", "dot",
                    "--run", run_id)
    assert dot.returncode == 0 and dot.stdout.startswith("digraph")
    assert "failed" in dot.stdout and "upstream_failed" in dot.stdout
    text = await cli(stack.env, "graph", "pipeline_simple_with_failure", "--run", run_id)
    assert "[faulty_transform]" in text.stdout and "failed" in text.stdout
    wrong = await cli(stack.env, "graph", "pipeline_simple", "--run", run_id)
    assert wrong.returncode == 2 and "is a run of 'pipeline_simple_with_failure'" in wrong.stderr


async def test_dev_runs_a_batch_of_the_ml_example_and_prints_its_experiments(
    tmp_path, cli_env
) -> None:
    args = ["dev", "examples/seed_pipelines.py", "--headless", "--data-dir", str(tmp_path / "d"),
            "--listen", "127.0.0.1:-1", "--run", "pipeline_simple_ml",
            "--batch", "examples/ml_grid.jsonl"]
    first = await cli(cli_env, *args)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "5 items, 5 to run, 0 skipped" in first.stderr
    header, *rows = [line for line in first.stdout.splitlines() if line.startswith(("RUN", "1"))]
    assert header.split()[:4] == ["RUN", "STATUS", "CREATED", "LEARNING_RATE"]
    assert "VAL.LOSS" in header and "R2" in header
    assert len(rows) == 5 and all(" succeeded " in r for r in rows)
    rates = {r.split()[4] for r in rows}
    assert rates == {"0.001", "0.003", "0.01", "0.03", "0.05"}
    again = await cli(cli_env, *args)  # the same file again: nothing new runs
    assert again.returncode == 0, again.stdout + again.stderr
    assert "5 items, 0 to run, 5 skipped" in again.stderr
    assert "5 of 5 runs" in again.stdout
    lone = await cli(cli_env, "dev", "examples/seed_pipelines.py", "--headless",
                     "--batch", "examples/ml_grid.jsonl")
    assert lone.returncode == 2
    assert "--batch runs the flow given by --run" in lone.stderr
