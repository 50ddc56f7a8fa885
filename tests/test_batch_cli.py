"""``flowforge batch ...`` and ``flowforge schedule backfill`` as a user types them: the real
console script against a real coordinator and agent (one of each for the whole module; each
test has flows of its own, so what one test ran is never another's business)."""

import asyncio
import contextlib
import datetime as dt
import json
import subprocess
import zoneinfo
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from agent.worker import Agent, AgentConfig
from flowforge.client import Client
from flowforge.registry import REGISTRY
from protocol.batches import BatchState
from tests import batchflows, inputflows
from tests.helpers import REPO, SharedStack, on_shared_stack, script

LINES = ['{"x": 1}', '{"x": 2}', "", '{"x": 3.0}', '{"x": 4, "fail": true}', '{"x": 3}',
         '{"x": 5}']
"""Six items on seven lines: line 6 repeats line 4 (3.0 and 3 are one JSON value); line 5
fails."""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(shared_stack: SharedStack) -> AsyncIterator[SharedStack]:
    """The module's nats-server and coordinator, with its flows registered and an agent that
    runs them. The registry is left as it was found: other modules never see these flows."""
    saved = (dict(REGISTRY.flows), dict(REGISTRY.replace), dict(REGISTRY.functions))
    flows = [batchflows.register_square(name) for name in ("sq_submit", "sq_read", "sq_bad")]
    flows += [batchflows.register_slow_square("slow_cli"), inputflows.register_which_hour()]
    functions = dict(REGISTRY.functions)
    REGISTRY.flows, REGISTRY.replace, REGISTRY.functions = saved
    agent = Agent(AgentConfig(connect=shared_stack.opts, queues=("default",),
                              functions=functions, concurrency=8))
    await agent.start()
    serving = asyncio.create_task(agent.run())
    try:
        await asyncio.wait_for(agent.ready.wait(), 10)
        async with Client(shared_stack.opts) as c:
            await c.register(flows)
        yield shared_stack
    finally:
        agent.request_stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serving, 15)
        await agent.shutdown()


async def cli(env: dict[str, str], *args: str, stdin: str | None = None,
              cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, script(["flowforge", *args]), env=env, cwd=cwd, input=stdin,
        capture_output=True, text=True, timeout=60, check=False)


def _file(tmp_path: Path, name: str, lines: list[str]) -> str:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@on_shared_stack
async def test_submit_runs_each_line_once_and_a_second_submit_runs_nothing_new(
    stack: SharedStack, shared_cli_env: dict[str, str], tmp_path: Path
) -> None:
    env, params = shared_cli_env, _file(tmp_path, "squares.jsonl", LINES)
    first = await cli(env, "batch", "submit", "sq_submit", "--params", params, "--name",
                      "squares", "--wait")
    assert first.returncode == 1, first.stderr  # line 5 failed: as `run --wait`, exit 1
    said = first.stdout.splitlines()
    assert said[0].endswith("(squares): 6 items, 5 to run, 1 skipped"), said
    assert said[1] == "  line 6 (item 4): same parameters as item 2"
    assert said[-1].endswith(" done: 4 succeeded, 1 failed, 1 skipped")

    again = await cli(env, "batch", "submit", "sq_submit", "--params", params, "--json")
    assert again.returncode == 0, again.stderr
    submission = json.loads(again.stdout)
    assert (submission["total"], submission["to_run"]) == (6, 0)
    assert submission["skipped"]["0"].startswith("succeeded in batch ")
    assert "--reprocess failed runs it again" in submission["skipped"]["3"]

    dry = await cli(env, "batch", "submit", "sq_submit", "--params", params, "--dry-run",
                    "--reprocess", "failed")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[0] == "dry run: 6 items, would run 1, would skip 5"
    assert "line 5" not in dry.stdout

    rerun = await cli(env, "batch", "submit", "sq_submit", "--params", params, "--reprocess",
                      "failed", "--wait", "--json")
    assert rerun.returncode == 1  # the same item fails again
    final = json.loads(rerun.stdout)
    assert (final["to_run"], final["batch"]["state"], final["batch"]["counts"]) == (
        1, "done", {"failed": 1, "skipped": 5})

    new = _file(tmp_path, "new.jsonl", ['{"x": 6}', '{"x": 1}'])
    ok = await cli(env, "batch", "submit", "sq_submit", "--params", new, "--wait")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.splitlines()[-1].endswith(" done: 1 succeeded, 1 skipped")
    listed = json.loads((await cli(env, "batch", "list", "--flow", "sq_submit", "--json")).stdout)
    assert len(listed) == 4  # the dry run created nothing


@on_shared_stack
async def test_list_and_show_print_progress_counts_and_items_as_text_and_json(
    stack: SharedStack, shared_cli_env: dict[str, str], tmp_path: Path
) -> None:
    env, params = shared_cli_env, _file(tmp_path, "squares.jsonl", LINES)
    submitted = await cli(env, "batch", "submit", "sq_read", "--params", params, "--name",
                          "read-me", "--wait", "--json")
    batch_id = json.loads(submitted.stdout)["batch"]["batch_id"]

    listed, listed_json, shown, shown_json, failed = await asyncio.gather(
        cli(env, "batch", "list", "--flow", "sq_read"),
        cli(env, "batch", "list", "--flow", "sq_read", "--json"),
        cli(env, "batch", "show", "read-me", "--items", "3"),
        cli(env, "batch", "show", batch_id, "--json"),
        cli(env, "batch", "show", "read-me", "--status", "failed"))
    header, row = listed.stdout.splitlines()
    assert header.split() == ["BATCH", "NAME", "FLOW", "STATE", "DONE", "ITEMS"]
    assert row.split()[:5] == [batch_id, "read-me", "sq_read", "done", "6/6"]
    assert row.endswith("4 succeeded, 1 failed, 1 skipped")
    assert [b["batch_id"] for b in json.loads(listed_json.stdout)] == [batch_id]

    lines = shown.stdout.splitlines()
    assert lines[0] == f"batch {batch_id} (read-me)  flow sq_read  DONE"
    assert lines[2] == "6 items, 6 done: 4 succeeded, 1 failed, 1 skipped"
    assert lines[4].split() == ["SEQ", "STATUS", "RUN", "PARAMS", "REASON"]
    assert lines[5].split()[:2] == ["0", "succeeded"] and lines[5].split()[3] == '{"x":1}'
    assert lines[-1] == "… more with --after 2"
    detail = json.loads(shown_json.stdout)
    assert detail["batch"]["counts"] == {"succeeded": 4, "failed": 1, "skipped": 1}
    assert [i["status"] for i in detail["items"]] == [
        "succeeded", "succeeded", "succeeded", "failed", "skipped", "succeeded"]
    [failed_row] = failed.stdout.splitlines()[5:]
    assert failed_row.split()[:2] == ["3", "failed"] and '{"fail":true,"x":4}' in failed_row


@on_shared_stack
async def test_pause_resume_and_cancel_say_the_new_state_and_a_finished_batch_refuses(
    stack: SharedStack, shared_cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = shared_cli_env
    params = _file(tmp_path, "slow.jsonl", [json.dumps({"x": i, "hold_s": 0.5}) for i in range(40)])
    started = await cli(env, "batch", "submit", "slow_cli", "--params", params, "--name", "slow",
                        "--max-active", "1", "--wait", "--wait-timeout", "0.5", "--json")
    assert started.returncode == 1
    batch_id = json.loads(started.stdout)["batch"]["batch_id"]  # a script still gets the id
    assert f"batch {batch_id} is still going after --wait-timeout" in started.stderr

    paused = await cli(env, "batch", "pause", "slow", "--note", "the source is slow today")
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.strip().endswith("flow slow_cli  PAUSED: the source is slow today")
    [record] = json.loads((await cli(env, "batch", "list", "--flow", "slow_cli", "--json")).stdout)
    assert (record["state"], record["note"]) == ("paused", "the source is slow today")
    assert "paused: the source is slow today" in (await cli(env, "batch", "list")).stdout

    resumed = json.loads((await cli(env, "batch", "resume", "slow", "--json")).stdout)
    assert resumed["state"] == BatchState.ACTIVE
    cancelled = await cli(env, "batch", "cancel", "slow")
    assert cancelled.stdout.strip().endswith("flow slow_cli  CANCELLED")
    shown = json.loads((await cli(env, "batch", "show", "slow", "--json")).stdout)
    assert shown["batch"]["counts"]["cancelled"] > 0 and "waiting" not in shown["batch"]["counts"]

    again = await cli(env, "batch", "cancel", "slow")
    assert again.returncode == 2
    assert again.stderr == f"flowforge batch: batch {batch_id} is already cancelled\n"
    verbs = ("show", "pause", "resume", "cancel")
    for verb, unknown in zip(verbs, await asyncio.gather(
            *(cli(env, "batch", verb, "no-such-batch") for verb in verbs)), strict=True):
        assert unknown.returncode == 2, verb
        assert unknown.stderr == ("flowforge batch: no batch with id or name 'no-such-batch'; "
                                  "`flowforge batch list` shows them\n")


@on_shared_stack
async def test_a_bad_parameter_file_is_a_usage_error_naming_file_and_line(
    stack: SharedStack, shared_cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = shared_cli_env
    files = {
        "broken.jsonl": ['{"x": 1}', "", '{"x": 2'],
        "array.jsonl": ['{"x": 1}', "[1, 2]"],
        "nan.jsonl": ['{"x": NaN}'],
        "empty.jsonl": ["", "  "],
    }
    for name, lines in files.items():
        _file(tmp_path, name, lines)
    cases = [
        (["--params", "broken.jsonl"], "broken.jsonl:3: not valid JSON: "),
        (["--params", "array.jsonl"], "array.jsonl:2: a JSON object of parameters is needed, "
                                      "not an array"),
        (["--params", "nan.jsonl"], "nan.jsonl:1: not valid JSON: "),
        (["--params", "empty.jsonl"], "empty.jsonl holds no parameter sets"),
        (["--params", "missing.jsonl"], "--params missing.jsonl: No such file or directory"),
        (["--params", "array.jsonl", "--dry-run", "--wait"], "--wait has nothing to wait for"),
    ]
    answers = await asyncio.gather(*(cli(env, "batch", "submit", "sq_bad", *args, cwd=tmp_path)
                                     for args, _ in cases))
    for (args, said), done in zip(cases, answers, strict=True):
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.startswith("flowforge batch: " + said), done.stderr
        assert done.stderr.count("\n") == 1, done.stderr
    assert (await cli(env, "batch", "list", "--flow", "sq_bad")).stdout.strip() == "no batches"

    nowhere = {**env, "FLOWFORGE_NATS_URL": "nats://127.0.0.1:1"}  # read before connecting
    assert (await cli(nowhere, "batch", "submit", "sq_bad", "--params", "broken.jsonl",
                      cwd=tmp_path)).returncode == 2

    # The coordinator finds line 4's x is no int: it names the item, the CLI its line.
    not_int = _file(tmp_path, "not_int.jsonl", ['{"x": 1}', "", "", '{"x": "one"}'])
    refused = await cli(env, "batch", "submit", "sq_bad", "--params", not_int)
    assert refused.returncode == 2
    assert refused.stderr == (f"flowforge batch: {not_int}:4: flow 'sq_bad': parameter 'x' "
                              "must be int, got str (item 1)\n")
    [dropped] = json.loads((await cli(env, "batch", "list", "--flow", "sq_bad", "--json")).stdout)
    assert dropped["state"] == "cancelled"
    unknown = await cli(env, "batch", "submit", "no_such_flow", "--params", not_int)
    assert unknown.returncode == 2 and "no_such_flow" in unknown.stderr


@on_shared_stack
async def test_a_dry_run_from_stdin_lists_twenty_skipped_items_then_counts_the_rest(
    stack: SharedStack, shared_cli_env: dict[str, str]
) -> None:
    lines = "\n".join(['{"x": 7}'] * 25) + "\n"
    done = await cli(shared_cli_env, "batch", "submit", "sq_bad", "--params", "-", "--dry-run",
                     stdin=lines)
    assert done.returncode == 0, done.stderr
    said = done.stdout.splitlines()
    assert said[0] == "dry run: 25 items, would run 1, would skip 24"
    assert said[1] == "  line 2 (item 1): same parameters as item 0"
    assert len(said) == 22 and said[-1] == "  … and 4 more (--json lists them all)"
    as_json = await cli(shared_cli_env, "batch", "submit", "sq_bad", "--params", "-",
                        "--dry-run", "--json", stdin=lines)
    plan = json.loads(as_json.stdout)
    assert plan["batch"] is None and len(plan["skipped"]) == 24


@on_shared_stack
async def test_schedule_backfill_runs_past_nominal_times_once(
    stack: SharedStack, shared_client: Client, shared_cli_env: dict[str, str]
) -> None:
    env, paris = shared_cli_env, zoneinfo.ZoneInfo("Europe/Paris")
    day = dt.datetime.now(paris).date() - dt.timedelta(days=2)
    first = dt.datetime.combine(day, dt.time(10))  # 10:00 to 15:00 Paris: no DST change there
    last = first + dt.timedelta(hours=5)
    added = await cli(env, "schedule", "add", "bf_hourly", "--flow", "which_hour", "--every",
                      "1h", "--timezone", "Europe/Paris", "--start",
                      f"{day - dt.timedelta(days=1)}T00:00", "--catchup", "none")
    assert added.returncode == 0, added.stderr
    span = ["--from", first.isoformat(), "--to", last.isoformat()]  # naive: Paris time

    dry = await cli(env, "schedule", "backfill", "bf_hourly", *span, "--dry-run")
    assert dry.stdout.strip() == "dry run: 6 times, would run 6, would skip 0", dry.stderr
    backfilled = await cli(env, "schedule", "backfill", "bf_hourly", *span, "--json")
    assert backfilled.returncode == 0, backfilled.stderr
    plan = json.loads(backfilled.stdout)
    assert (plan["times"], plan["skipped"], plan["batch"]["spec"]["name"]) == (
        6, {}, "backfill bf_hourly")
    done = await shared_client.wait_batch(plan["batch"]["batch_id"], timeout_s=30)
    assert done.state is BatchState.DONE

    wanted = [(first + dt.timedelta(hours=h)).replace(tzinfo=paris) for h in range(6)]
    runs = await shared_client.runs(flow="which_hour", limit=100)
    assert sorted(r.scheduled_for for r in runs) == [t.timestamp() for t in wanted]
    seen = [(await shared_client.get(r.run_id)).tasks[0].output for r in runs]
    assert sorted(json.loads(bytes(o)) for o in seen) == [
        t.astimezone(dt.UTC).isoformat() for t in wanted]  # each task saw its nominal time

    shown = await cli(env, "batch", "show", "backfill bf_hourly")
    assert "backfill of schedule bf_hourly" in shown.stdout
    assert shown.stdout.splitlines()[4].split()[3] == "NOMINAL"

    again = await cli(env, "schedule", "backfill", "bf_hourly", *span)
    said = again.stdout.splitlines()
    assert said[0].endswith("(backfill bf_hourly): 6 times, 0 to run, 6 skipped"), said
    assert all(": already run: run " in line for line in said[1:]) and len(said) == 7
    assert said[1].startswith(f"  {wanted[0].isoformat()}: ")  # in the schedule's zone
    assert len(await shared_client.runs(flow="which_hour", limit=100)) == 6

    unknown = await cli(env, "schedule", "backfill", "nope", *span)
    assert unknown.returncode == 2 and "no schedule named 'nope'" in unknown.stderr
