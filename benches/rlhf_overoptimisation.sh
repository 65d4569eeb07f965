#!/usr/bin/env bash
# RLHF end to end on a small SFT model, and reward hacking shown (issue #17):
#   1. a reward model from built-in preferences (the SFT model's own replies ranked by the noisy labeller)
#   2. rlhf with the KL penalty and early stopping: the kept checkpoint's held-out gold vs the SFT model's
#   3. the ablation, --kl-coef 0 --no-early-stop at a higher lr: does the proxy keep rising while gold
#      peaks and falls? the held-out sample logged at each evaluation shows what the policy learned to say
# Usage: benches/rlhf_overoptimisation.sh SFT_RUN [OUT]   (minutes on 2 cores with the tiny preset)
set -euo pipefail
SFT=${1:?usage: $0 SFT_RUN [OUT]}
OUT=${2:-runs/rlhf-bench}
STEPS=${STEPS:-60}
mkdir -p "$OUT"
lscpu | grep -m1 "Model name" || true
[ -e "$OUT/rm/ckpt_000300.head" ] || minigpt reward --base "$SFT" --out "$OUT/rm" --steps 300 --pairs 1024 \
    --lr 1e-3 --eval-every 100 | tail -1 | tee "$OUT/reward.json"
rm -rf "$OUT/kl" "$OUT/nokl"
minigpt rlhf --base "$SFT" --reward "$OUT/rm" --out "$OUT/kl" --steps "$STEPS" --lr 1e-4 \
    | tail -1 | tee "$OUT/kl.json"
minigpt rlhf --base "$SFT" --reward "$OUT/rm" --out "$OUT/nokl" --steps "$STEPS" --lr 3e-4 \
    --kl-coef 0 --no-early-stop | tail -1 | tee "$OUT/nokl.json"
python - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
for run in ("kl", "nokl"):
    rows = [json.loads(l) for l in open(f"{out}/{run}/log.jsonl")]
    print(f"\n{run}: step  held-out proxy  held-out gold (+- spread)  KL/token  length  sample")
    for r in rows:
        if "val_gold" in r:
            print(f"  {r['step']:4d}  {r['val_proxy']:8.3f}  {r['val_gold']:8.3f} +- {r['val_gold_std']:.3f}  "
                  f"{r['val_kl']:8.4f}  {r['val_length']:5.1f}  {r['sample'][:70]!r}")
PY
