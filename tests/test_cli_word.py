"""The command line keeps its word: the README's table of shared options is true for every command, and
every option of every command says what it does."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from alignsam.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parser and those of its own sub-commands (`eval TASK`, `synth LAYOUT`)."""
    out = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                out.extend(_parsers(child))
    return out


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for p in _parsers(parser) for a in p._actions for flag in a.option_strings}


def test_the_readme_table_of_shared_options_is_true():
    text = README.read_text()
    table = text.split("<!-- shared-options -->")[1].split("<!-- /shared-options -->")[0].strip().splitlines()
    header = [cell.strip().strip("`") for cell in table[0].strip("|").split("|")][1:]
    commands = _commands()
    listed = set()
    for row in table[2:]:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        names = re.findall(r"`([a-z-]+)`", cells[0])
        for name in names:
            listed.add(name)
            have = _options(commands[name])
            for option, mark in zip(header, cells[1:], strict=True):
                assert (option in have) == (mark == "x"), (name, option, mark)
    assert listed == set(commands), sorted(set(commands) ^ listed)


def test_every_option_has_help_text():
    missing = []
    for command in _commands().values():
        for parser in _parsers(command):
            for action in parser._actions:
                if isinstance(action, argparse._HelpAction):
                    continue
                if not action.help:
                    missing.append(f"{parser.prog}: {action.option_strings or action.dest}")
    assert not missing, missing
