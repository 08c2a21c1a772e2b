"""What a training run reports while it runs: `metrics.jsonl`, TensorBoard scalars and a progress bar.

`metrics.jsonl` holds one JSON object per logged step. A resumed run redoes the steps after its checkpoint,
so the rows past that step are dropped when the run starts again: every step appears once. TensorBoard
scalars (`out/tensorboard`) need the `tensorboard` package (`pip install "alignsam[train]"`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from alignsam.io.files import write_text_atomic
from alignsam.io.optional import require


class RunLog:
    """The reports of one run (on the main process; elsewhere every method does nothing).

    Args:
        out: the run folder.
        total_steps, start_step: the progress bar's extent and starting point (a resumed run's step).
        desc: the progress bar's label.
        progress: show a progress bar on stderr.
        tensorboard: also write TensorBoard scalars to `out/tensorboard`.
        main: this process reports (rank 0 of a distributed run).
    """

    def __init__(
        self,
        out: Path,
        *,
        total_steps: int,
        start_step: int,
        desc: str,
        progress: bool = True,
        tensorboard: bool = False,
        main: bool = True,
    ) -> None:
        self.out, self.main, self.desc = out, main, desc
        self.path = out / "metrics.jsonl"
        self.bar: Any = None
        self.writer: Any = None
        if not main:
            return
        _drop_rows_after(self.path, start_step)
        if tensorboard:
            self.writer = _summary_writer(out / "tensorboard")
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total_steps, initial=start_step, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True,
                smoothing=0.1,
            )  # fmt: skip

    def log(
        self, row: dict[str, Any], *, postfix: dict[str, str] | None = None, scalars: dict[str, float] | None = None
    ) -> None:
        """Append `row` (with its `step`) to metrics.jsonl, show `postfix` on the bar, write `scalars`."""
        if not self.main:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.bar is not None and postfix:
            self.bar.set_postfix(postfix, refresh=False)
        if self.writer is not None:
            for name, value in (scalars or {}).items():
                self.writer.add_scalar(name, value, row["step"])
            self.writer.flush()

    def advance(self, steps: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(steps)

    def note(self, message: str) -> None:
        """A line on stderr, prefixed with the program's name."""
        if self.main:
            print(f"alignsam {self.desc}: {message}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()


def _drop_rows_after(path: Path, step: int) -> None:
    """Keep the rows of steps up to `step` (those a resumed run does not redo); rewritten whole or not at all."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:  # a line cut short by a kill: dropped
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
            kept.append(line)
    write_text_atomic(path, "".join(f"{line}\n" for line in kept))


def _summary_writer(folder: Path) -> Any:
    require("tensorboard", "train", "TensorBoard scalars (--tensorboard)")
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(folder))
