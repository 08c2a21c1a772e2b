"""Malformed model folders (config.json beside the weights) for ALIGN, SAM and InternImage: each ends in one
ConfigError/CheckpointError line, before anything is built. One subprocess loads them all under an address-space
limit 3 GB above what it holds after start-up, so a config that would build 10^7 layers fails the test (it grew
past 5.8 GB) instead of the machine."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, time
    from pathlib import Path
    import torch
    import alignsam
    from alignsam import AlignModel, SamModel
    from alignsam.align import AlignProcessor
    from alignsam.errors import AlignSamError
    from alignsam.internimage import InternImage
    from tests.fuzz import corpus
    from tests.internimage.helpers import tiny_config

    out = Path(sys.argv[1])
    presets = Path(alignsam.__file__).parent / "presets"
    InternImage(tiny_config()).save_pretrained(out / "internimage-source")
    sources = {"align": presets / "align-demo", "sam": presets / "sam-demo", "internimage": out / "internimage-source"}
    loaders = {"align": AlignModel.from_pretrained, "sam": SamModel.from_pretrained,
               "internimage": InternImage.from_pretrained}
    vm = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm + 3 * 2**30, resource.RLIM_INFINITY))
    results = []
    variants = list(corpus.config_variants(sources, out))
    binary_vocab = out / "align-binary-vocab"
    import shutil
    shutil.copytree(sources["align"], binary_vocab)
    (binary_vocab / "tokenizer.json").unlink()
    (binary_vocab / "vocab.txt").write_bytes(bytes(range(256)) * 20)
    for family, case, folder in [*variants, ("align-processor", "binary_vocab", binary_vocab)]:
        load = AlignProcessor.from_pretrained if family == "align-processor" else loaders[family]
        start = time.perf_counter()
        try:
            load(str(folder))
            outcome = "loaded"
        except AlignSamError as err:
            outcome = f"{type(err).__name__}: {err}"
        except BaseException as err:
            outcome = f"CRASH {type(err).__name__}: {err}"
        results.append([family, case, outcome[:400], time.perf_counter() - start])
    print(json.dumps(results))
    """
)


def test_malformed_model_folders(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(results) >= 40
    bad = [r for r in results if not r[2].startswith(("ConfigError", "CheckpointError", "ModelNotFoundError"))]
    assert not bad, bad
    assert all("\n" not in r[2] for r in results)
    slow = [r for r in results if r[3] > 10]
    assert not slow, slow  # refused before building: a 10^7-layer config took minutes and gigabytes
    sizes = {r[1]: r[2] for r in results if r[0] == "sam"}
    assert "parameters, over the limit" in sizes["depth_1e7"]
