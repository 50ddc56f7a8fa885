"""The flowforge-dashboard console script: help, options, usage errors."""

import pytest

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
