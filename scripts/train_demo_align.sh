#!/usr/bin/env bash
# The demonstration ALIGN (the bundled `demo`) and the noise table of docs/training.md, from nothing:
# data, two training phases (29 minutes on 2 CPU cores), evaluation.
#
#   scripts/train_demo_align.sh                  # 30% noisy captions: the shipped model
#   NOISE=0.6 RUN=runs/demo-noise60 scripts/train_demo_align.sh
#
# Everything is seeded: a data set depends only on (--seed, --noise, sizes), a run on its configuration.
set -euo pipefail

NOISE=${NOISE:-0.3}
DATA=${DATA:-data/synthetic-noise${NOISE}}
RUN=${RUN:-runs/align-demo-noise${NOISE}}

# 1. Two sets of 64 px scenes as webdataset shards, with the same share of noisy captions (wrong, truncated
#    or unrelated alt-text). PNG: JPEG's chroma subsampling smears the colours of objects a few pixels wide.
#    120,000 scenes of one object, and 100,000 of one to four. About 4.5 minutes; 1.3 GB.
if [ ! -f "$DATA/single/synth.json" ]; then
    alignsam synth webdataset "$DATA/single" -n 120000 --shard-size 1000 --size 64 --noise "$NOISE" --format png \
        --seed 1 --min-objects 1 --max-objects 1 --no-progress
fi
if [ ! -f "$DATA/multi/synth.json" ]; then
    alignsam synth webdataset "$DATA/multi" -n 100000 --shard-size 1000 --size 64 --noise "$NOISE" --format png \
        --seed 0 --no-progress
fi

# 2. Phase 1, from scratch, on one-object scenes (18 minutes): a WordPiece vocabulary learnt from the captions,
#    the align-demo architecture (64 px EfficientNet width 0.5 / depth 0.5, 2-layer 128-wide BERT), batch 256,
#    constant learning rate. One object per scene is what makes shape worth learning: in a batch of 256 each
#    pair has about 30 negatives of its colour that differ only in shape. No flips: captions say left and right.
alignsam train \
    --train-data "$DATA/single/{00000..00119}.tar" --out "$RUN/phase1" \
    --arch align-demo --vocab-size 1000 --vocab-captions 20000 --image-size 64 --resize-size 68 --no-hflip \
    --batch-size 256 --steps 1476 --opt adamw --lr 2e-3 --wd 0.05 --warmup 100 --schedule constant \
    --workers 0 --log-every 50 --save-every 200 --keep-checkpoints 30 --seed 0

# 3. Phase 2, from phase 1 (11 minutes): half one-object and half one-to-four-object scenes, the learning rate
#    decayed to 0. The multi-object scenes teach counts, positions and several objects to one caption
#    (retrieval); the one-object scenes keep the shapes.
alignsam train \
    --init "$RUN/phase1/model" --out "$RUN/phase2" \
    --train-data "$DATA/single/{00000..00099}.tar::$DATA/multi/{00000..00099}.tar" \
    --image-size 64 --resize-size 68 --no-hflip \
    --batch-size 256 --steps 900 --opt adamw --lr 2e-3 --wd 0.05 --warmup 50 --schedule cosine \
    --workers 0 --log-every 50 --save-every 150 --keep-checkpoints 30 --seed 1

# 4. Held-out benchmark: zero-shot top-1/top-5 over 64 shape x colour classes, R@K among 1,000 scenes.
alignsam eval synthetic --model "$RUN/phase2/model" --no-progress -o "$RUN/eval.json"

# 5. To ship it (the bundled preset also holds regions.json, the crop settings for label-masks and find):
#    cp "$RUN"/phase2/model/{config.json,model.safetensors,preprocessor_config.json,tokenizer.json,tokenizer_config.json,vocab.txt} \
#       src/alignsam/presets/align-demo/
