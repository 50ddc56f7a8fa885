"""``flowforge experiments`` and ``flowforge compare`` against the real stack: the table, the
differing parameters, --where/--sort/--limit, --csv and --json; and their text, highlighted."""

import asyncio
import csv
import json
from pathlib import Path

import pytest

from flowforge.client import Client
from flowforge.experiments_cli import BOLD, experiments_text, grid
from protocol.experiments import ExperimentRow, ExperimentsPage
from protocol.states import RunStatus
from tests import experimentflows
from tests.helpers import run_cli

pytestmark = pytest.mark.e2e

LRS = (0.1, 0.01, 0.001)


async def _three_runs(client: Client) -> dict[float, str]:
    """Runs of exp_train with three learning rates (accuracy 0.8 - lr), in that order."""
    await client.register(experimentflows.FLOWS)
    ids = {}
    for lr in LRS:
        run = await client.start("exp_train", {"lr": lr, "depth": 3})
        ids[lr] = run.run_id
        assert (await client.wait(run.run_id, timeout_s=30)).run.status is RunStatus.SUCCEEDED
    return ids


async def _cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    done = await asyncio.to_thread(run_cli, ["flowforge", *args], env)
    return done.returncode, done.stdout, done.stderr


async def test_experiments_lists_runs_with_differing_params_and_final_metrics(
    coordinator, start_agent, client: Client, cli_env, tmp_path: Path
) -> None:
    await start_agent()
    ids = await _three_runs(client)

    code, shown, err = await _cli(cli_env, "experiments", "exp_train")
    assert code == 0, err
    lines = shown.splitlines()
    assert lines[0] == "same in every run: depth=3"
    assert lines[1].split() == ["RUN", "STATUS", "CREATED", "LR", "ACCURACY", "CHECKPOINTED",
                                "F1", "LOSS", "VAL.LOSS"]
    assert [line.split()[0] for line in lines[2:5]] == [ids[0.001], ids[0.01], ids[0.1]]
    assert lines[2].split()[4:] == ["0.001", "0.799", "2", "0.749", "0.251", "0.002"]
    assert lines[-1] == "3 of 3 runs, newest first"

    code, shown, err = await _cli(cli_env, "experiments", "exp_train", "--metric", "accuracy",
                                  "--sort", "-accuracy", "--limit", "2")
    assert code == 0, err
    assert [line.split()[0] for line in shown.splitlines()[2:4]] == [ids[0.001], ids[0.01]]
    assert shown.splitlines()[1].split()[3:] == ["LR", "ACCURACY"]
    assert "2 of 3 runs, sorted by -accuracy (--limit for more)" in shown

    code, shown, err = await _cli(cli_env, "experiments", "exp_train", "--where",
                                  "params.lr<0.05 and metrics.accuracy>=0.79 and status=succeeded",
                                  "--sort", "params.lr")
    assert code == 0, err
    assert [line.split()[0] for line in shown.splitlines()[2:4]] == [ids[0.001], ids[0.01]]
    assert "2 of 2 runs" in shown


async def test_experiments_writes_csv_and_json_and_refuses_a_bad_expression(
    coordinator, start_agent, client: Client, cli_env, tmp_path: Path
) -> None:
    await start_agent()
    ids = await _three_runs(client)
    path = tmp_path / "runs.csv"
    code, _, err = await _cli(cli_env, "experiments", "exp_train", "--sort", "params.lr",
                              "--csv", str(path))
    assert code == 0 and "wrote 3 runs to" in err, err
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["run_id", "status", "created_at", "params.lr", "params.depth",
                             "metrics.accuracy", "metrics.checkpointed", "metrics.f1",
                             "metrics.loss", "metrics.val.loss"]
    assert [(r["run_id"], r["params.lr"], r["metrics.accuracy"]) for r in rows] == [
        (ids[0.001], "0.001", "0.799"), (ids[0.01], "0.01", "0.79"), (ids[0.1], "0.1", "0.7")]
    assert rows[0]["status"] == "succeeded" and rows[0]["created_at"].endswith("+00:00")

    code, shown, err = await _cli(cli_env, "experiments", "exp_train", "--json")
    assert code == 0, err
    page = json.loads(shown)
    assert page["differing"] == ["lr"] and page["total"] == 3 and len(page["rows"]) == 3
    assert page["rows"][0]["metrics"]["accuracy"] == 0.799

    for args, said in ((["--where", "params.lr<0.1 or status=failed"], "expected 'and'"),
                       (["--sort", "-bad name"], "not a field"),
                       (["--where", "status>succeeded"], "status can only be compared")):
        code, shown, err = await _cli(cli_env, "experiments", "exp_train", *args)
        assert code == 2 and said in err and shown == "", (args, err)
    code, _, err = await _cli(cli_env, "experiments", "no_such_flow")
    assert code == 2 and "no flow named 'no_such_flow'" in err, err


async def test_compare_shows_params_side_by_side_final_metrics_series_and_results(
    coordinator, start_agent, client: Client, cli_env
) -> None:
    await start_agent()
    ids = await _three_runs(client)
    a, b = ids[0.1], ids[0.001]
    code, shown, err = await _cli(cli_env, "compare", a, b)
    assert code == 0, err
    lines = shown.splitlines()
    assert lines[0].split() == [a, b]
    assert ["params.lr", "0.1", "0.001"] in [line.split() for line in lines]
    assert ["accuracy", "0.7", "0.799"] in [line.split() for line in lines]
    loss = lines.index("loss (train)")
    assert lines[loss + 1].split() == ["step", a, b]
    assert "accuracy (train)" not in lines  # one point: it is the final value, shown above
    assert lines[loss + 2].split() == ["0", "1.1", "1.001"]
    assert lines[loss + 5].split() == ["3", "0.35", "0.251"]
    assert any(line.split()[:4] == [a, "train", "#1", "hand_rolled"] for line in lines)
    assert any(line.split()[:4] == [b, "train", "#1", "plot"] for line in lines)

    code, shown, err = await _cli(cli_env, "compare", a, b, "--json")
    assert code == 0, err
    compared = json.loads(shown)
    assert compared["differing"] == ["lr"]
    assert [r["run_id"] for r in compared["runs"]] == [a, b]
    code, _, err = await _cli(cli_env, "compare", a, "0190000000000000001")
    assert code == 2 and "0190000000000000001" in err, err


def test_differing_params_are_bold_on_a_terminal_and_plain_elsewhere() -> None:
    page = ExperimentsPage(flow="f", total=2, metrics=["acc"], differing=["lr"], rows=[
        ExperimentRow(run_id=f"r{i}", status=RunStatus.SUCCEEDED, created_at=0.0,
                      params={"lr": lr, "depth": 3}, metrics={"acc": 0.5 + lr})
        for i, lr in enumerate((0.1, 0.2))])
    plain = experiments_text(page)
    assert BOLD not in plain
    bold = experiments_text(page, emphasis=True)
    assert f"{BOLD}LR" in bold and f"{BOLD}0.1" in bold and f"{BOLD}ACC" not in bold
    assert bold.replace(BOLD, "").replace("\x1b[0m", "") == plain
    escaped = grid(["x"], [["\x1b]0;pwned\x07"]], {0})
    assert "\\x1b]0;pwned\\x07" in escaped  # text from the bus is shown, never obeyed
