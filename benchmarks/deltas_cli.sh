#!/bin/bash
# Sizes of `lmgc compress NEW` and `lmgc compress NEW --base OLD` (one thread, levels 1 and 2) on
# the checkpoints of benchmarks/delta_workloads.py, each delta archive decompressed with --base
# and compared with NEW byte for byte. The table is in docs/deltas.md.
#   bash benchmarks/deltas_cli.sh [bench-out/deltas]
set -euo pipefail
D=${1:-bench-out/deltas}
O=$(mktemp -d)
trap 'rm -rf "$O"' EXIT
run() { # label NEW OLD level
  lmgc compress "$D/$2" -l "$4" -j 1 -q -f -o "$O/alone.lmgc"
  lmgc compress "$D/$2" --base "$D/$3" -l "$4" -j 1 -q -f -o "$O/delta.lmgc"
  lmgc decompress "$O/delta.lmgc" --base "$D/$3" -q -f -o "$O/back"
  cmp -s "$O/back" "$D/$2" && ok=identical || ok=DIFFERENT
  awk -v l="$1" -v n="$(stat -c %s "$D/$2")" -v a="$(stat -c %s "$O/alone.lmgc")" \
      -v b="$(stat -c %s "$O/delta.lmgc")" -v lv="$4" -v ok="$ok" \
      'BEGIN { printf "%-36s l%s %10d  alone %10d %6.2f%%  --base %10d %6.2f%%  %s\n",
               l, lv, n, a, 100*a/n, b, 100*b/n, ok }'
}
for L in 1 2; do
  run "pretrain 400 vs 350 .pt (all)" pre-000400.pt pre-000350.pt $L
  run "pretrain 400 vs 350 weights" pre-000400.weights.safetensors pre-000350.weights.safetensors $L
  run "pretrain 400 vs 350 exp_avg" pre-000400.exp_avg.safetensors pre-000350.exp_avg.safetensors $L
  run "pretrain 400 vs 350 exp_avg_sq" pre-000400.exp_avg_sq.safetensors \
      pre-000350.exp_avg_sq.safetensors $L
  run "pretrain 400 vs 350 weights bf16" pre-000400.weights-bf16.safetensors \
      pre-000350.weights-bf16.safetensors $L
  run "pretrain 100 vs 50 .pt (all)" pre-000100.pt pre-000050.pt $L
  run "finetune 100 vs 75 .pt (all)" ft-000100.pt ft-000075.pt $L
  run "finetune 100 vs 75 weights" ft-000100.weights.safetensors ft-000075.weights.safetensors $L
  run "finetune 25 vs base weights" ft-000025.weights.safetensors pre-000400.weights.safetensors $L
  run "finetune 100 vs base weights" ft-000100.weights.safetensors pre-000400.weights.safetensors $L
  run "finetune 100 vs base weights bf16" ft-000100.weights-bf16.safetensors \
      pre-000400.weights-bf16.safetensors $L
done
