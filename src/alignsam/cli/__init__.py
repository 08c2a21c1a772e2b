"""The `alignsam` command line: one program, one sub-command per job.

Each sub-command lives in its own module of this package and exposes `add_parser(subparsers)`, which
registers the command and sets `run` (a function of the parsed arguments returning an exit code). Modules
are found by listing this package, so adding a command means adding a module.
Command modules import nothing heavy at module level (no torch), so `alignsam --help` and argument errors
are instant; the work and its imports happen inside `run`.

Every command writes its result as JSON to stdout (or to `--output`), reports progress and problems on
stderr, and exits 0 on success, 1 when nothing could be done, 2 on a usage error (options argparse refuses,
options that do not go together, a malformed prompt: `AlignSamError.exit_code`), 130 when Ctrl-C stopped it.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from alignsam import __version__

# The order `--help` lists the commands in; modules not named here follow alphabetically.
ORDER: tuple[str, ...] = (
    "classify", "embed", "index", "similarity", "tag", "masks", "segment", "label-masks", "find", "search",
    "train", "eval", "finetune-sam", "synth", "export", "serve",
)  # fmt: skip


def command_modules() -> list[str]:
    """Names of the modules of this package that define a sub-command."""
    names = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    rank = {name.replace("-", "_"): i for i, name in enumerate(ORDER)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alignsam",
        description="ALIGN and Segment Anything: zero-shot classification, embeddings, tags, masks, search, training.",
    )
    parser.add_argument("--version", action="version", version=f"alignsam {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in command_modules():
        module = importlib.import_module(f"alignsam.cli.{name}")
        if hasattr(module, "add_parser"):
            module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import os

    from alignsam.errors import AlignSamError
    from alignsam.io.files import check_output_file, ensure_output_folder

    # OpenMP threads that spin while they wait take the cores from whoever has work when they are shared;
    # passive waits leave them. Read when torch starts OpenMP, so set before any command imports torch.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warning_line(args.command)
            if getattr(args, "output", None):  # a bad --output or --overlay-dir fails now, not after the work
                check_output_file(args.output, create_parent=False)
            if getattr(args, "overlay_dir", None):
                ensure_output_folder(args.overlay_dir, create_parents=False)
            return int(args.run(args) or 0)
    except AlignSamError as err:
        print(f"alignsam {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"alignsam {args.command}: interrupted", file=sys.stderr)
        return 130


def _warning_line(command: str) -> Any:
    """Warnings as one line a user reads (`alignsam segment: warning: ...`), not Python's file and line."""

    def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        print(f"alignsam {command}: warning: {message}", file=sys.stderr)

    return show


if __name__ == "__main__":
    sys.exit(main())
