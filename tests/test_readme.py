"""The README as a new user reads it: every Python block compiles, every FlowForge command in
a shell block parses with the real console script's options, and the trigger snippets run
against a live coordinator, so the README cannot drift from the code unnoticed."""

import argparse
import asyncio
import re
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.cli import build_parser as agent_parser
from coordinator.cli import build_parser as coordinator_parser
from coordinator.service import Coordinator
from flowforge.cli import build_parser as flowforge_parser
from flowforge.embedded import EmbeddedNats
from tests.helpers import REPO

README = (REPO / "README.md").read_text()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)
SHELL_BLOCKS = re.findall(r"```bash\n(.*?)```", README, re.S)
PROMPTS = "\n".join(re.findall(r"^\$ (.*)$", README, re.M))
"""The commands of the blocks that show a session: ``$ command`` then its real output."""


def _dashboard_parser() -> argparse.ArgumentParser:
    from tui.app import build_parser

    return build_parser()


PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "flowforge": flowforge_parser, "flowforge-coordinator": coordinator_parser,
    "flowforge-agent": agent_parser, "flowforge-dashboard": _dashboard_parser,
}


def _commands() -> list[list[str]]:
    """Each FlowForge command of the shell blocks and sessions, as argv: comments, `&&` chains,
    `env $(cat FILE)` prefixes and `.venv/bin/` paths taken off."""
    found = []
    for block in [*SHELL_BLOCKS, PROMPTS]:
        for line in block.splitlines():
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                while words and (words[0] == "env" or words[0].startswith("$(") or "=" in words[0]
                                 or words[0].endswith(")")):
                    words = words[1:]
                if words and Path(words[0]).name in PARSERS:
                    found.append([Path(words[0]).name, *words[1:]])
    return found


COMMANDS = _commands()


def test_the_readme_has_the_blocks_this_test_reads() -> None:
    assert len(PYTHON_BLOCKS) >= 3 and len(COMMANDS) >= 20


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[f"python-{i}" for i in range(len(PYTHON_BLOCKS))])
def test_every_python_block_compiles(block: str) -> None:
    compile(block, "README.md", "exec")


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(c)[:60] for c in COMMANDS])
def test_every_command_parses_with_the_real_options(argv: list[str]) -> None:
    args = argv[1:]
    if argv[0] == "flowforge" and args[:1] == ["dashboard"]:
        argv, args = ["flowforge-dashboard"], args[1:]
    try:
        PARSERS[argv[0]]().parse_args(args)
    except SystemExit as exc:  # --help exits 0; a wrong option exits 2
        assert exc.code == 0, f"README command does not parse: {' '.join(argv)}"


@pytest.mark.parametrize("marker", ["send_trigger", "nats.connect"])
async def test_the_trigger_snippets_run_against_a_live_coordinator(
    marker: str, coordinator: Coordinator, nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    [block] = [b for b in PYTHON_BLOCKS if marker in b]
    script = tmp_path / "snippet.py"
    script.write_text(block.replace("nats://127.0.0.1:4222", nats_server.url))

    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), cwd=REPO, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 60)

    assert proc.returncode == 0, err.decode()
