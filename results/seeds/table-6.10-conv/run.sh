#!/bin/bash
# Thesis Table 6.10, conv rows: Split-MNIST, class order (0,1),(2,3),..., 1 epoch per experience, batch 64,
# the thesis conv net at width factor 4 with the thesis's §6.3.1 conv values (CH: lr 0.1, weight decay 0.001,
# no dropout, eta_conv 1e-4, eta 1e-3; BP: lr 3e-4, dropout 0.1), AdamW on C and Adam for BP as the linear rows.
# Usage: bash results/seeds/table-6.10-conv/run.sh [SEEDS]   (default 1, the seed recorded here; compare reuses finished runs)
OMP_NUM_THREADS=1 nice -n 19 hebbedge compare split-mnist --learners hebbian,naive --seeds "${1:-1}" --class-order 0,1,2,3,4,5,6,7,8,9 \
  --set 'model.arch="conv"' --set model.width_factor=4 \
  --set hebbian.lr=0.1 --set hebbian.weight_decay=0.001 --set hebbian.dropout=0.0 --set hebbian.eta=1e-3 --set hebbian.eta_conv=1e-4 \
  --set backprop.lr=3e-4 --set backprop.dropout=0.1 \
  --device cpu --out runs/table-6.10-conv
