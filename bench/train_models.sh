#!/usr/bin/env bash
# Reproduce the bundled checkpoints (qslm/checkpoints/*) on a CPU machine. Results and training
# times are in docs/benchmarks.md. Each run is resumable: re-run after an interruption.
set -euo pipefail
: "${QSLM_DATA_DIR:?set QSLM_DATA_DIR to the data folder}"
export OMP_NUM_THREADS=1  # the bundled runs used one thread each (two ran side by side)
OUT=${1:-runs}
mkdir -p "$OUT"

# Language model: pre-train on Brown + WikiText-2 valid (its last 10% held out), then continue with the
# WikiText-2 text (the test domain) weighted 20x in the stream.
qslm train --arch spikegpt --task wikitext2 --out "$OUT/spikegpt-wt2-base" --steps 2000 --batch-size 16 --lr 1e-3 \
  --warmup 200 --set n_embd=256 --set n_layer=6 --set ctx_len=128 --checkpoint-every 100 --eval-every 500
qslm train --arch spikegpt --task wikitext2 --init "$OUT/spikegpt-wt2-base" --out "$OUT/spikegpt-wt2" --steps 1200 \
  --batch-size 16 --lr 5e-4 --warmup 50 --wikitext-weight 20 --checkpoint-every 50 --eval-every 200

# SST-2 classifiers. Both train on SST-2 train less the held-out sentences (and the phrases cut from them
# alone), see qslm.data.sst2.split_holdout.
#
# SpikeGPT: a language model pre-trained on Brown + WikiText-2 valid + the SST-2 training sentences (twice),
# BPE 8192, then fine-tuned as a classifier (+1.3 points on the held-out sentences over the same model from
# scratch, seed 0 against seed 0).
python - "$OUT/sst2-train-sentences.txt" <<'PY'
import sys
from qslm.data import sst2
training, _ = sst2.split_holdout(sst2.load_sst2("train"))
sentences = [training[i].sentence for i in sst2.sentence_indices(training)]
with open(sys.argv[1], "w", encoding="utf-8") as handle:
    handle.write("\n".join(sentences) + "\n")
PY
qslm train --arch spikegpt --task wikitext2 --out "$OUT/spikegpt-sst2-lm" --steps 1500 --batch-size 32 --lr 1e-3 \
  --warmup 100 --vocab-size 8192 --set n_embd=192 --set n_layer=4 --set ctx_len=64 \
  --corpus "$QSLM_DATA_DIR/brown/brown.txt" --corpus "$OUT/sst2-train-sentences.txt" \
  --corpus "$OUT/sst2-train-sentences.txt" --checkpoint-every 100 --eval-every 500
# Fine-tuned with seeds 0 and 1; seed 1 scored higher on the held-out training sentences (80.50% against
# 80.12%) and is the bundled model.
qslm train --arch spikegpt --task sst2 --init "$OUT/spikegpt-sst2-lm" --out "$OUT/spikegpt-sst2" --steps 2000 \
  --batch-size 32 --lr 5e-4 --warmup 100 --set dropout=0.1 --seed 1 --checkpoint-every 100 --eval-every 500

# Spiking encoder: from scratch, BPE 16384 (2048 splits sentiment words into pieces and cost ~2.5 points;
# 16384 gave +0.9 points over 8192 on average over seeds), each query's attention averaged over the
# sentence's keys (attention_keys=16; Spikformer's sum over keys grows with sentence length, and SST-2
# trains on short phrases but is scored on whole sentences), distilled from the SpikeGPT classifier above.
# Trained with seeds 0, 1 and 2; seed 1 scored highest on the held-out training sentences (80.25% against
# 79.87% and 78.37%) and is the bundled model.
for seed in 0 1 2; do
  qslm train --arch spiking-encoder --task sst2 --out "$OUT/spiking-encoder-sst2-seed$seed" --steps 2000 \
    --batch-size 32 --lr 1e-3 --warmup 100 --vocab-size 16384 --set n_embd=128 --set n_layer=2 --set n_head=4 \
    --set time_steps=4 --set max_len=64 --set attention_keys=16 --teacher "$OUT/spikegpt-sst2" --seed "$seed" \
    --checkpoint-every 100 --eval-every 500
done
