"""docs/offline-stack.md says what the offline stack really offers: every command of the CLI,
and every output the state file holds (all of template.yaml's Outputs: e2e test_offline_stack
checks the state file itself)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from cfnlint.decode import decode

from devstack.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "offline-stack.md").read_text(encoding="utf-8")


def table_row(key: str) -> str:
    (row,) = [line for line in DOC.splitlines() if line.startswith(f"| `{key}")]
    return row


def test_the_state_file_table_lists_every_template_output() -> None:
    template, errors = decode(str(ROOT / "template.yaml"))
    assert not errors and template is not None
    listed = set(re.findall(r"`(\w+)`", table_row("outputs"))) - {"outputs", "Outputs"}
    assert set(template["Outputs"]) == listed


def test_the_command_table_lists_every_command() -> None:
    (commands,) = [
        action
        for action in build_parser()._actions  # argparse keeps its subcommands here
        if isinstance(action, argparse._SubParsersAction)
    ]
    documented = {
        match.group(1)
        for line in DOC.splitlines()
        if (match := re.match(r"\| `([a-z-]+)[ `]", line))
    }
    assert set(commands.choices) <= documented, set(commands.choices) - documented
