"""Thread defaults on an idle and on a loaded machine: `alignsam masks` with the demo SAM, and the seed API's
image features (`AlignModel.get_image_features` under `torch.no_grad()`) against transformers'.

The load is a competing process started by this benchmark: one busy thread per core but one (a pure-Python
loop per process, so it holds a core without memory traffic). Each setting runs as a fresh command
(`alignsam masks`) or a fresh interpreter (image features), interleaved, so every setting sees the same load.

    python -m benchmarks.threads_speed [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]

BUSY = "while True: pass"

FEATURES = """
import sys, time, torch
torch.set_num_threads(int(sys.argv[3])) if sys.argv[3] != "default" else None
from benchmarks.align_speed import quick_config
from tests.align.conftest import conditioned_align, varied_images
from alignsam.align import align_base
which, quick = sys.argv[1], sys.argv[2] == "quick"
config = quick_config() if quick else align_base()
pixels = varied_images(8, config.vision_config.image_size)
if which == "transformers":
    import tempfile
    from transformers import AlignModel
    with tempfile.TemporaryDirectory() as tmp:
        conditioned_align(config).save_pretrained(tmp)
        model = AlignModel.from_pretrained(tmp).eval()
    call = lambda: model.get_image_features(pixel_values=pixels)
else:
    from alignsam import AlignModel
    model = conditioned_align(config)
    model.fast = type(model.fast)()  # the default: the seed API's fast twin
    call = lambda: model.get_image_features(pixels)
with torch.no_grad():
    call()
    times = []
    for _ in range(3):
        start = time.perf_counter(); call(); times.append(time.perf_counter() - start)
print(sorted(times)[1])
"""


@contextlib.contextmanager
def load(processes: int) -> Iterator[None]:
    """`processes` busy Python processes for the duration."""
    procs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(processes)]
    try:
        time.sleep(1.0)
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def _masks_seconds(images: list[Path], threads: str) -> float:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    argv = [sys.executable, "-m", "alignsam", "masks", *map(str, images), "--sam-model", "demo", "-q"]
    if threads != "auto":
        argv += ["--threads", threads]
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return time.perf_counter() - start


def _features_seconds(which: str, quick: bool, threads: str) -> float:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    argv = [sys.executable, "-c", FEATURES, which, "quick" if quick else "full", threads]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return float(done.stdout.split()[-1])


def run(quick: bool = False, repeats: int | None = None) -> dict[str, Any]:
    from alignsam.fast import available_cores, idle_cores
    from alignsam.synthetic import SceneConfig, SceneGenerator

    repeats = repeats or (1 if quick else 3)
    cores = available_cores()
    competitors = max(1, cores - 1)
    results: dict[str, Any] = {"cores": cores, "competing_processes": competitors, "masks": {}, "features": {}}
    with tempfile.TemporaryDirectory() as tmp:
        scenes = SceneGenerator(SceneConfig(image_size=256), seed=11)
        images = []
        for i in range(2 if quick else 6):
            path = Path(tmp) / f"scene{i}.png"
            Image.fromarray(np.asarray(scenes[i].image)).save(path)
            images.append(path)
        for state in ("loaded",) if quick else ("idle", "loaded"):  # quick (the test suite): the code path once
            ctx = load(competitors) if state == "loaded" else contextlib.nullcontext()
            with ctx:
                results[f"idle_cores_{state}"] = idle_cores()
                masks: dict[str, list[float]] = {"auto": [], "1": [], str(cores): []}
                features: dict[str, list[float]] = {"alignsam": [], "alignsam, 1 thread": [], "transformers": []}
                for _ in range(repeats):
                    for threads in masks:
                        masks[threads].append(_masks_seconds(images, threads))
                    features["alignsam"].append(_features_seconds("alignsam", quick, "default"))
                    features["alignsam, 1 thread"].append(_features_seconds("alignsam", quick, "1"))
                    features["transformers"].append(_features_seconds("transformers", quick, "default"))
            results["masks"][state] = {k: round(float(np.median(v)), 3) for k, v in masks.items()}
            med = {k: float(np.median(v)) for k, v in features.items()}
            results["features"][state] = {k: round(v, 4) for k, v in med.items()}
            results["features"][state]["ratio_vs_transformers"] = round(med["transformers"] / med["alignsam"], 2)
            results["features"][state]["ratio_1_thread_vs_transformers"] = round(
                med["transformers"] / med["alignsam, 1 thread"], 2
            )
    results["images"] = len(images)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    print(json.dumps(run(args.quick, args.repeats), indent=2))


if __name__ == "__main__":
    main()
