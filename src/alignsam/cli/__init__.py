"""The `alignsam` command line: one program, one sub-command per job.

Each sub-command lives in its own module of this package and exposes `add_parser(subparsers)`, which
registers the command and sets `run` (a function of the parsed arguments returning an exit code). Modules
are found by listing this package, so adding a command means adding a module.
Command modules import nothing heavy at module level (no torch), so `alignsam --help` and argument errors
are instant; the work and its imports happen inside `run`.

Every command writes its result as JSON to stdout (or to `--output`), reports progress and problems on
stderr, and exits 0 on success, 1 when nothing could be done, 2 on a usage error (options argparse refuses,
options that do not go together, a malformed prompt: `AlignSamError.exit_code`), 130 when Ctrl-C stopped it,
143 when SIGTERM did. SIGTERM (what `kill`, systemd, Kubernetes and batch schedulers send) is handled as
Ctrl-C is: the folder commands keep the images done and write their partial result, training keeps its
checkpoints; a second SIGTERM ends the process at once. A write that fails (a full disk) ends the command
with one line naming the file, exit 1 (docs/faults.md).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import pkgutil
import signal
import sys
import threading
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
    from alignsam.io.files import check_output_file, clean_partials, ensure_output_folder

    # OpenMP threads that spin while they wait take the cores from whoever has work when they are shared;
    # passive waits leave them. Read when torch starts OpenMP, so set before any command imports torch.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    terminated = _TerminateAsInterrupt()
    try:
        with warnings.catch_warnings(), terminated:
            warnings.showwarning = _warning_line(args.command)
            if getattr(args, "output", None):  # a bad --output or --overlay-dir fails now, not after the work
                output = check_output_file(args.output, create_parents=False)
                clean_partials(output.parent, output.name)  # what a killed run of it was writing
            if getattr(args, "overlay_dir", None):
                ensure_output_folder(args.overlay_dir, create_parents=False)
            code = int(args.run(args) or 0)
        return 143 if terminated.received and code == 130 else code
    except AlignSamError as err:
        print(f"alignsam {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except OSError as err:  # a read or write outside the atomic writers failed: a full disk, a folder removed
        where = getattr(args, "out", None) or getattr(args, "output", None)
        print(f"alignsam {args.command}: error: {os_error_line(err, where)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"alignsam {args.command}: interrupted", file=sys.stderr)
        return 143 if terminated.received else 130


class _TerminateAsInterrupt:
    """While active, the first SIGTERM raises KeyboardInterrupt in the main thread (the path Ctrl-C takes,
    which keeps finished work) and records that it came; a second one terminates as the default handler
    does. Only installed from the main thread (signal handlers can only be set there); restored on exit."""

    def __init__(self) -> None:
        self.received = False
        self._previous: Any = None

    def __enter__(self) -> _TerminateAsInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = True
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM is not caught
        raise KeyboardInterrupt


def os_error_line(err: OSError, output: str | None = None) -> str:
    """An OSError as one line a user reads: the file it names (a full disk's write may name none: then the
    command's `output`, the file or folder it was writing) and the system's reason."""
    from alignsam.io.files import write_failure

    if err.errno in (errno.ENOSPC, errno.EDQUOT) and (err.filename or output):
        return write_failure(str(err.filename or output), err)
    where = f": '{err.filename}'" if err.filename is not None else ""
    return f"{err.strerror or err}{where}"


def _warning_line(command: str) -> Any:
    """Warnings as one line a user reads (`alignsam segment: warning: ...`), not Python's file and line."""

    def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        print(f"alignsam {command}: warning: {message}", file=sys.stderr)

    return show


if __name__ == "__main__":
    sys.exit(main())
