#!/usr/bin/env bash
# Reproduce the bundled checkpoints (qslm/checkpoints/*) on a CPU machine. Results and training
# times are in docs/benchmarks.md. Each run is resumable: re-run after an interruption.
set -euo pipefail
: "${QSLM_DATA_DIR:?set QSLM_DATA_DIR to the data folder}"
export OMP_NUM_THREADS=1  # the bundled runs used one thread each (two ran side by side)
OUT=${1:-runs}

# Language model: pre-train on Brown + WikiText-2 valid (its last 10% held out), then continue with the
# WikiText-2 text (the test domain) weighted 20x in the stream.
qslm train --arch spikegpt --task wikitext2 --out "$OUT/spikegpt-wt2-base" --steps 2000 --batch-size 16 --lr 1e-3 \
  --warmup 200 --set n_embd=256 --set n_layer=6 --set ctx_len=128 --checkpoint-every 100 --eval-every 500
qslm train --arch spikegpt --task wikitext2 --init "$OUT/spikegpt-wt2-base" --out "$OUT/spikegpt-wt2" --steps 1200 \
  --batch-size 16 --lr 5e-4 --warmup 50 --wikitext-weight 20 --checkpoint-every 50 --eval-every 200

# SST-2 classifiers: BPE vocabulary of 8192 for SpikeGPT, 16384 for the encoder (2048 splits sentiment words
# into pieces and cost ~2.5 points; 16384 gave the encoder +0.9 points over 8192 on average over seeds).
qslm train --arch spikegpt --task sst2 --out "$OUT/spikegpt-sst2" --steps 2000 --batch-size 32 --lr 1e-3 \
  --warmup 100 --vocab-size 8192 --set n_embd=192 --set n_layer=4 --set ctx_len=64 --set dropout=0.1 \
  --checkpoint-every 100 --eval-every 500

qslm train --arch spiking-encoder --task sst2 --out "$OUT/spiking-encoder-sst2" --steps 2000 --batch-size 32 \
  --lr 1e-3 --warmup 100 --vocab-size 16384 --set n_embd=128 --set n_layer=2 --set n_head=4 --set time_steps=4 \
  --set max_len=64 --checkpoint-every 100 --eval-every 500
