"""Issue 12 item 10: every command has a description, every option and argument a help text; --version."""
from __future__ import annotations

import argparse

from audit import __version__
from audit.cli import build_parser
from tests.helpers import run_cli


def _subcommands(parser):
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_command_has_a_description_and_every_option_a_help():
    missing = []
    for name, command in _subcommands(build_parser()).items():
        if not command.description:
            missing.append(f"{name}: description")
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if not action.help:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def test_version():
    done = run_cli("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"imagefair {__version__}"


def test_streamlit_config_has_no_file_watcher():
    """A .venv inside the repository overflows inotify: the app runs without the watcher."""
    import tomllib

    from tests.helpers import REPO

    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["server"]["fileWatcherType"] == "none"


def test_help_names_no_internal_issue_and_report_takes_a_comparison():
    commands = _subcommands(build_parser())
    texts = {name: command.format_help() for name, command in commands.items()}
    assert not [name for name, text in texts.items() if "issue 1" in text]  # project issue numbers are not help
    assert "comparison folder written by compare" in " ".join(texts["report"].split())
    assert "estimate label noise" not in texts["label-noise"].lower()  # a screen; `review` verifies
