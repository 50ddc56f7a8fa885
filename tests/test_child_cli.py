"""``flowforge show`` of child tasks, as subprocesses against the real stack (NATS, an in-process
coordinator and agent): a task's children counted with the failed ones first, nested children
summarised by depth, every child of one task with ``--children``; and ``Client.children`` paging
and filtering."""

import json
import re

import pytest

from flowforge.client import Client
from protocol.children import child_name
from protocol.errors import ErrorCode, RemoteError
from protocol.states import TaskStatus
from tests import childflows
from tests.helpers import flowforge_cli as cli


def columns(line: str) -> list[str]:
    """A table row's cells (two spaces or more apart: a time reads ``12 ms``)."""
    return re.split(r"\s{2,}", line.strip())


async def _finished(client: Client, flow: str, params: dict) -> str:
    run_id = (await client.start(flow, params)).run_id
    await client.wait(run_id, timeout_s=60)
    return run_id


async def test_show_counts_a_task_s_children_lists_the_failed_first_and_all_with_children(
    coordinator, start_agent, client: Client, cli_env: dict[str, str]
) -> None:
    await client.register(childflows.register_all())
    await start_agent(concurrency=3)
    run_id = await _finished(client, "tolerant", {"n": 10})  # items 3 and 8 fail

    shown = await cli(cli_env, "show", run_id)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "children: 10 (2 failed, 8 succeeded)" in text
    rows = [line.split() for line in text.splitlines() if "ValueError: item" in line]
    assert [r[:4] for r in rows] == [["3", "failed", "1", "tests.childflows:picky"],
                                     ["8", "failed", "1", "tests.childflows:picky"]]
    assert "item 3 at 3 is not wanted" in text
    assert f"all of them: flowforge show {run_id} --children parent" in text

    listing = await cli(cli_env, "show", run_id, "--children", "parent")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0] == f"children of parent in run {run_id}: 10 (2 failed, 8 succeeded)"
    assert lines[1].split() == ["SEQ", "STATUS", "ATTEMPT", "FUNCTION", "TOOK", "CHILDREN",
                                "OUTPUT", "OR", "ERROR"]
    cells = [columns(line) for line in lines[2:]]
    assert [int(c[0]) for c in cells] == list(range(10)), "in spawn order"
    assert cells[0][1:4] == ["succeeded", "1", "tests.childflows:picky"]
    assert cells[4][5:] == ["-", "4"], "its own children (none) and its output"
    assert cells[3][1] == "failed" and cells[3][6] == "ValueError: item 3 at 3 is not wanted"

    failed = await cli(cli_env, "show", run_id, "--children", "parent", "--status", "failed")
    assert [line.split()[0] for line in failed.stdout.splitlines()[2:]] == ["3", "8"]
    none = await cli(cli_env, "show", run_id, "--children", "parent", "--status", "running")
    assert none.stdout.splitlines()[-1] == "none running"

    as_json = json.loads((await cli(cli_env, "show", run_id, "--json")).stdout)
    kids = as_json["children"]["parent"]
    assert kids["counts"] == {"failed": 2, "succeeded": 8}
    assert [(k["seq"], k["status"]) for k in kids["listed"]] == [(3, "failed"), (8, "failed")]
    every = json.loads((await cli(cli_env, "show", run_id, "--children", "parent",
                                  "--json")).stdout)
    assert every["counts"] == kids["counts"] and len(every["children"]) == 10
    assert every["children"][5]["output"] == 5

    leaf = await cli(cli_env, "show", run_id, "--children", "parent/0")
    assert leaf.returncode == 0 and f"parent/0 has no child tasks in run {run_id}" in leaf.stdout
    alone = await cli(cli_env, "show", run_id, "--status", "failed")
    assert alone.returncode == 2 and "--status needs --children" in alone.stderr
    bad = await cli(cli_env, "show", run_id, "--children", "no such task")
    assert bad.returncode == 2 and "invalid children.list request" in bad.stderr, bad.stdout
    unknown = await cli(cli_env, "show", run_id, "--children", "child/0")
    assert unknown.returncode == 2 and "has no task 'child'; it has parent" in unknown.stderr


async def test_show_summarises_nested_children_by_depth_and_lists_a_child_s_children(
    coordinator, start_agent, client: Client, cli_env: dict[str, str]
) -> None:
    await client.register(childflows.register_all())
    await start_agent(concurrency=2)
    run_id = await _finished(client, "nest", {"width": 4})  # parent → 4 middle → 3 leaf each

    text = (await cli(cli_env, "show", run_id)).stdout
    assert "children: 4 (4 succeeded)" in text
    assert [line for line in text.splitlines() if line.startswith("   parent/")] == [
        f"   parent/{i}  children: 3 (3 succeeded)" for i in range(4)]
    assert "all of them" not in text, "nothing needs a look"
    assert f"one's children: flowforge show {run_id} --children parent/0" in text

    middle = (await cli(cli_env, "show", run_id, "--children", "parent")).stdout
    assert [columns(line)[5] for line in middle.splitlines()[2:-1]] == ["3"] * 4
    assert middle.splitlines()[-1] == (f"a child's children: flowforge show {run_id} "
                                       "--children parent/SEQ")
    leaves = (await cli(cli_env, "show", run_id, "--children", "parent/2")).stdout.splitlines()
    assert leaves[0].endswith("parent/2 in run " + run_id + ": 3 (3 succeeded)")
    assert [line.split()[-1] for line in leaves[2:]] == ["20", "21", "22"]

    as_json = json.loads((await cli(cli_env, "show", run_id, "--task", "parent",
                                    "--json")).stdout)
    assert list(as_json["children"]) == ["parent", "parent/0", "parent/1", "parent/2", "parent/3"]
    assert as_json["children"]["parent/3"] == {"counts": {"succeeded": 3}}

    mapped = await _finished(client, "parents", {"xs": [0, 1]})  # each instance maps 20
    text = (await cli(cli_env, "show", mapped)).stdout
    assert [line for line in text.splitlines() if line.startswith("   parent~")] == [
        "   parent~0  children: 20 (20 succeeded)", "   parent~1  children: 20 (20 succeeded)"]
    of_one = (await cli(cli_env, "show", mapped, "--children", "parent~1")).stdout.splitlines()
    assert len(of_one) == 22 and columns(of_one[-1])[6] == str(2 * 119)


async def test_the_client_pages_through_children_in_name_order_and_filters_by_state(
    coordinator, start_agent, client: Client
) -> None:
    await client.register(childflows.register_all())
    await start_agent(concurrency=2)
    nest = await _finished(client, "nest", {"width": 4})
    names = [child_name(k.parent, k.seq) async for k in client.all_children(nest, page=5)]
    assert names == ([f"parent/{i}" for i in range(4)]
                     + [f"parent/{i}/{j}" for i in range(4) for j in range(3)])
    below = [k.seq async for k in client.all_children(nest, "parent/1", page=2)]
    assert below == [0, 1, 2]

    tolerant = await _finished(client, "tolerant", {"n": 10})
    failed = await client.children(tolerant, "parent", status=TaskStatus.FAILED)
    assert [k.seq for k in failed.children] == [3, 8] and not failed.more
    assert failed.counts == {"parent": {"failed": 2, "succeeded": 8}}, "counts of every state"
    page = await client.children(tolerant, "parent", after="parent/4", limit=3)
    assert [k.seq for k in page.children] == [5, 6, 7] and page.more
    for after in ("parent", "parent/x"):  # not a child's name: refused, not an internal error
        with pytest.raises(RemoteError) as refused:
            await client.children(tolerant, after=after)
        assert refused.value.code == ErrorCode.BAD_REQUEST and "$.after" in refused.value.message
    counted = await client.children(tolerant, limit=0)
    assert counted.children == [] and counted.counts == failed.counts
