#!/bin/bash
# BP conv (naive) at width factor 1 under the Table 6.10 protocol: does the twin learn each new pair?
# Seed 0, 2,000 test images; 10,000 or all 60,000 training images. Writes runs/table-6.10-conv-bp-f1/NAME.
# Usage: bash results/seeds/table-6.10-conv-bp-f1/run.sh   (about 15 minutes on one CPU core)
run() { name=$1; shift; hebbedge compare split-mnist --learners naive --seeds 1 --class-order 0,1,2,3,4,5,6,7,8,9 \
  --set 'model.arch="conv"' --set model.width_factor=1 --set backprop.dropout=0.1 --test-size 2000 --device cpu \
  --out runs/table-6.10-conv-bp-f1/$name "$@"; }
run adam3e-4-10k --train-size 10000 --set backprop.lr=3e-4
run sgdm3e-4-10k --train-size 10000 --set backprop.lr=3e-4 --set 'backprop.optimizer="sgd"' --set backprop.sgd_momentum=0.9
run adam1e-4-10k --train-size 10000 --set backprop.lr=1e-4
run adam3e-4-60k --set backprop.lr=3e-4
