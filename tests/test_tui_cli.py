"""The flowforge-dashboard console script: help, options, usage errors."""

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

import examples.seed_pipelines  # noqa: F401 - registers the flows the agent serves
from coordinator.service import Coordinator
from flowforge.client import Client
from tests.helpers import run_cli
from tui.app import build_parser, main


def test_help_shows_examples_keys_and_the_connection_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "flowforge-dashboard --nats nats://" in out and "--namespace" in out
    assert "ctrl+p command palette" in out


def test_the_nats_url_comes_from_the_flag_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert build_parser().parse_args(["--nats", "nats://ops:4222"]).nats == "nats://ops:4222"
    monkeypatch.setenv("FLOWFORGE_NATS_URL", "nats://from-env:4222")
    assert build_parser().parse_args([]).nats == "nats://from-env:4222"


def test_a_bad_namespace_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--namespace", "Not Valid"]) == 2
    assert "namespace" in capsys.readouterr().err


@pytest.mark.e2e
async def test_the_screenshot_tool_saves_a_run_with_its_failed_task_from_a_live_deployment(
    coordinator: Coordinator, client: Client, start_agent: Callable[..., Awaitable[object]],
    cli_env: dict[str, str], tmp_path: Path,
) -> None:
    await client.register()
    await start_agent()
    run = await client.start("pipeline_simple_with_failure")
    await client.wait(run.run_id, timeout_s=30)
    out = tmp_path / "run.svg"
    argv = [sys.executable, "-m", "tui.screenshot", "--run", run.run_id,
            "--task", "faulty_transform", str(out)]
    done = await asyncio.to_thread(run_cli, argv, cli_env)
    assert done.returncode == 0, done.stderr
    svg = out.read_text()
    assert svg.startswith("<svg") and "faulty_transform" in svg and "NameError" in svg

    missing = await asyncio.to_thread(
        run_cli, [sys.executable, "-m", "tui.screenshot", "--run", run.run_id, "--task", "nope",
                  str(tmp_path / "x.svg")], cli_env)
    assert missing.returncode == 1 and "has no task 'nope'" in missing.stderr
