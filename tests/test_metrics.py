"""--metrics on the real stack: the coordinator and an agent as console scripts, scraped over
HTTP and parsed with prometheus-client's parser, checked against known runs; and
``flowforge stats``."""

import asyncio
import json
import socket
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

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

Samples = dict[str, list[tuple[dict[str, str], float]]]
"""Sample name → (labels, value) of each sample."""


@dataclass(frozen=True)
class Stack:
    env: dict[str, str]
    coordinator_url: str
    agent_url: str
    runs: dict[str, str]
    """Flow → the id of its run (measured succeeded, doomed failed)."""
    procs: list[Proc]


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=5) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain")
        text = answer.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The one sample of ``name`` with these labels (among others); 0 when there is none."""
    found = [v for lab, v in samples.get(name, []) if labels.items() <= lab.items()]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else 0.0


async def answers(url: str) -> bool:
    try:
        await asyncio.to_thread(scrape, url)
        return True
    except OSError:
        return False


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def _stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    root = tmp_path_factory.mktemp("metrics")
    server = EmbeddedNats(root / "nats", port=-1)
    await server.start()
    env = env_for(server.url)
    procs: list[Proc] = []

    def spawn(*args: str) -> Proc:
        procs.append(Proc(list(args), root / f"{len(procs)}-{args[0]}.log", env, REPO))
        return procs[-1]

    urls = [f"http://127.0.0.1:{free_port()}/metrics" for _ in range(2)]
    try:
        spawn("flowforge-coordinator", "--db", str(root / "ff.db"),
              "--metrics", urls[0].removeprefix("http://").removesuffix("/metrics"))
        await wait_for(lambda: coordinator_answers(server.url), timeout_s=20)
        spawn("flowforge-agent", "--import", "tests.metricflows", "--concurrency", "4",
              "--agent-id", "metered", "--heartbeat", "0.5",
              "--metrics", urls[1].removeprefix("http://").removesuffix("/metrics"))
        await wait_for(lambda: answers(urls[0]), timeout_s=20)
        await wait_for(lambda: answers(urls[1]), timeout_s=20)
        assert (await cli(env, "register", "tests.metricflows")).returncode == 0
        runs = {}
        for flow, code in (("measured", 0), ("doomed", 1)):
            done = await cli(env, "run", flow, "--wait", "--json")
            assert done.returncode == code, done.stdout + done.stderr
            runs[flow] = json.loads(done.stdout)["run"]["run_id"]
        yield Stack(env, urls[0], urls[1], runs, procs)
    finally:
        for proc in reversed(procs):
            proc.stop()
        await server.stop(grace_s=TEARDOWN_GRACE_S)


@pytest.fixture
def stack(_stack: Stack, request: pytest.FixtureRequest) -> Iterator[Stack]:
    yield _stack
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for proc in _stack.procs:
            print(f"--- {' '.join(proc.args)} ---\n{proc.log()}")


MEASURED_ENDS = {
    ("measured", "items", "task", "succeeded"): 1,
    ("measured", "flaky", "task", "succeeded"): 1,
    ("measured", "square", "task", "succeeded"): 1,
    ("measured", "square", "instance", "succeeded"): 3,
    ("measured", "parent", "task", "succeeded"): 1,
    ("measured", "parent", "child", "succeeded"): 2,
    ("measured", "join", "task", "succeeded"): 1,
    ("doomed", "doomed", "task", "failed"): 1,
    ("doomed", "after", "task", "upstream_failed"): 1,
}
"""How the task instances of one run of measured and one of doomed end."""
KNOWN = ("measured", "doomed")


def ends(series: list[tuple[dict[str, str], float]]) -> dict[tuple[str, ...], float]:
    return {(lab["flow"], lab["task"], lab["kind"], lab["status"]): v for lab, v in series
            if lab["flow"] in KNOWN}


@on_shared_stack
async def test_the_coordinator_counts_how_the_task_instances_and_runs_of_known_runs_ended(
    stack: Stack
) -> None:
    m = await asyncio.to_thread(scrape, stack.coordinator_url)
    assert ends(m["flowforge_tasks_finished_total"]) == MEASURED_ENDS
    retries = {(lab["flow"], lab["task"], lab["kind"], lab["reason"]): v
               for lab, v in m["flowforge_task_retries_total"] if lab["flow"] in KNOWN}
    assert retries == {("measured", "flaky", "task", "failed"): 1,
                       ("doomed", "doomed", "task", "failed"): 1}
    assert value(m, "flowforge_runs_finished_total", flow="measured", status="succeeded") == 1
    assert value(m, "flowforge_runs_finished_total", flow="doomed", status="failed") == 1
    assert value(m, "flowforge_runs_finished_total", flow="measured", status="failed") == 0


@on_shared_stack
async def test_each_attempt_is_timed_once_from_queued_to_started_and_started_to_finished(
    stack: Stack
) -> None:
    m = await asyncio.to_thread(scrape, stack.coordinator_url)
    for flow, run_id in stack.runs.items():
        shown = await cli(stack.env, "show", run_id, "--json")
        for task in json.loads(shown.stdout)["tasks"]:
            key = {"flow": flow, "task": task["task"], "kind": "task"}
            attempts = task["history"]
            if task["task"] == "square":  # mapped: its instances are timed, not itself
                attempts = []
            durations = [a["finished_at"] - a["started_at"] for a in attempts]
            assert value(m, "flowforge_task_duration_seconds_count", **key) == len(durations)
            assert value(m, "flowforge_task_wait_seconds_count", **key) == len(durations)
            assert value(m, "flowforge_task_duration_seconds_sum", **key) == pytest.approx(
                sum(durations), abs=1e-6)
    instance = {"flow": "measured", "task": "square", "kind": "instance"}
    child = {"flow": "measured", "task": "parent", "kind": "child"}
    assert value(m, "flowforge_task_duration_seconds_count", **instance) == 3
    assert value(m, "flowforge_task_wait_seconds_count", **child) == 2
    flaky = {"flow": "measured", "task": "flaky", "kind": "task"}
    buckets = [(float(lab["le"]), v) for lab, v in m["flowforge_task_wait_seconds_bucket"]
               if flaky.items() <= lab.items()]
    assert [v for _, v in sorted(buckets)] == sorted(v for _, v in buckets)  # cumulative
    assert max(v for _, v in buckets) == 2


@on_shared_stack
async def test_no_label_value_is_a_run_id_an_instance_or_a_child_name(stack: Stack) -> None:
    for url in (stack.coordinator_url, stack.agent_url):
        m = await asyncio.to_thread(scrape, url)
        values = {v for samples in m.values() for labels, _ in samples for v in labels.values()}
        assert values
        for v in values:
            assert not any(run_id in v for run_id in stack.runs.values()), v
            assert "~" not in v and "/" not in v, v


@on_shared_stack
async def test_the_coordinator_sees_the_agent_and_its_slots(stack: Stack) -> None:
    m = await asyncio.to_thread(scrape, stack.coordinator_url)
    assert value(m, "flowforge_agents", status="live") == 1
    assert value(m, "flowforge_agent_slots_total", agent="metered") == 4
    assert value(m, "flowforge_agents_lost_total") == 0


@on_shared_stack
async def test_the_agent_counts_what_it_ran_by_function_and_outcome(stack: Stack) -> None:
    m = await asyncio.to_thread(scrape, stack.agent_url)
    ran = {(lab["function"].rpartition(":")[2], lab["outcome"]): v
           for lab, v in m["flowforge_agent_tasks_total"]}
    assert ran == {("items", "succeeded"): 1, ("flaky", "failed"): 1, ("flaky", "succeeded"): 1,
                   ("square", "succeeded"): 3, ("parent", "succeeded"): 1,
                   ("halve", "succeeded"): 2, ("join", "succeeded"): 1, ("doomed", "failed"): 2}
    fn = "tests.metricflows:square"
    assert value(m, "flowforge_agent_task_duration_seconds_count", function=fn) == 3
    assert value(m, "flowforge_agent_queue_slots_total", queue="default") == 4
    assert value(m, "flowforge_agent_queue_slots_busy", queue="default") == 0
    assert value(m, "flowforge_agent_info", agent="metered") == 1


@on_shared_stack
async def test_a_task_no_agent_takes_shows_in_its_queue_depth_until_its_run_is_cancelled(
    stack: Stack
) -> None:
    started = await cli(stack.env, "run", "stranded", "--json")
    run_id = json.loads(started.stdout)["run_id"]
    url = stack.coordinator_url

    async def queued(n: int) -> bool:
        return value(await asyncio.to_thread(scrape, url), "flowforge_queue_depth",
                     queue="idle") == n

    await wait_for(lambda: queued(1), timeout_s=10)
    m = await asyncio.to_thread(scrape, url)
    first = value(m, "flowforge_queue_oldest_waiting_seconds", queue="idle")
    assert value(m, "flowforge_runs_active", flow="stranded") == 1
    assert value(m, "flowforge_queue_depth", queue="default") == 0

    async def older() -> bool:
        m = await asyncio.to_thread(scrape, url)
        return value(m, "flowforge_queue_oldest_waiting_seconds", queue="idle") > first

    await wait_for(older, timeout_s=10)
    assert (await cli(stack.env, "cancel", run_id)).returncode == 0
    await wait_for(lambda: queued(0), timeout_s=10)
    m = await asyncio.to_thread(scrape, url)
    assert value(m, "flowforge_queue_oldest_waiting_seconds", queue="idle") == 0
    assert value(m, "flowforge_runs_finished_total", flow="stranded", status="cancelled") == 1
    assert value(m, "flowforge_tasks_finished_total", flow="stranded", status="cancelled") == 1


@on_shared_stack
async def test_flowforge_stats_prints_the_figures_the_endpoint_serves(stack: Stack) -> None:
    done = await cli(stack.env, "stats", "--json")
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    served = [(s["labels"], s["value"]) for s in stats["tasks_finished"]]
    assert ends(served) == MEASURED_ENDS
    m = await asyncio.to_thread(scrape, stack.coordinator_url)
    wait = {tuple(sorted(h["labels"].items())): h["buckets"][-1] for h in stats["task_wait_s"]}
    scraped = {tuple(sorted(lab.items())): v for lab, v in
               m["flowforge_task_wait_seconds_count"]}
    assert wait == scraped
    assert {a["agent_id"]: a["slots_total"] for a in stats["agents"]} == {"metered": 4}

    text = await cli(stack.env, "stats")
    assert text.returncode == 0, text.stderr
    assert "measured" in text.stdout and "flaky" in text.stdout
    assert "agents lost since start: 0" in text.stdout


async def test_a_metrics_address_that_is_taken_stops_the_coordinator_with_exit_2(
    spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = spawn("flowforge-coordinator", "--db", str(tmp_path / "ff.db"),
                     "--metrics", f"127.0.0.1:{port}")
        code = await asyncio.to_thread(proc.popen.wait, 30)
    assert code == 2
    assert f"--metrics 127.0.0.1:{port}: cannot listen there" in proc.log()
