#!/bin/sh
# The RL learning check: the built-in chat model, then RL on a task it solves only sometimes.
#   pretraining  `minigpt train`: the built-in corpus, tiny preset (L4 H4 C128 T128, V 1024), 300 steps
#   SFT          `minigpt sft`: the built-in conversations, 800 steps (its defaults)
#   RL           60 steps of 8 problems x 16 samples on the built-in `count` task, lr 3e-4
# pass@1 / pass@16 on the held-out test split before and after are the last JSON line.
# Usage: sh benches/rl_learning.sh [RUNS_DIR]   (about 5 + 12 + 15 minutes on 2 cores)
set -e
R=${1:-runs/rl-check}
[ -e "$R/base/ckpt_000300.bin" ] || minigpt train --out "$R/base" --steps 300
[ -e "$R/sft/ckpt_000800.bin" ] || minigpt sft --base "$R/base" --out "$R/sft" --steps 800
minigpt rl --base "$R/sft" --task count --steps 60 --lr 3e-4 --eval-every 20 --eval-problems 124 --out "$R/rl"
