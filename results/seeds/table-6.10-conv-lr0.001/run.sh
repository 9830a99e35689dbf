#!/bin/bash
# Thesis Table 6.10, CH conv row, with C trained by AdamW at lr 0.001 instead of the thesis's 0.1 (which it gave
# for SGD with momentum; docs/seeds.md section 3); everything else as results/seeds/table-6.10-conv/run.sh.
# Usage: bash results/seeds/table-6.10-conv-lr0.001/run.sh [SEEDS]   (seeds 0..SEEDS-1; 5 are recorded here: 4,181 to 6,661 s of training each)
OMP_NUM_THREADS=1 nice -n 19 hebbedge compare split-mnist --learners hebbian --seeds "${1:-1}" --class-order 0,1,2,3,4,5,6,7,8,9 \
  --set 'model.arch="conv"' --set model.width_factor=4 \
  --set hebbian.lr=0.001 --set hebbian.weight_decay=0.001 --set hebbian.dropout=0.0 --set hebbian.eta=1e-3 --set hebbian.eta_conv=1e-4 \
  --device cpu --out runs/table-6.10-conv-lr0.001
