#!/bin/bash
# CH conv (hebbian) at width factor 1 under the Table 6.10 protocol: does the learner learn each new pair,
# and what moves it? Seed 0, all 60,000 training images, 2,000 test images, the thesis's §6.3.1 CH conv values
# (lr 0.1, weight decay 0.001, no dropout, eta_conv 1e-4, eta 1e-3) unless a run overrides one.
# Writes runs/table-6.10-conv-ch-f1/NAME. Usage: [SEEDS=N] bash results/seeds/table-6.10-conv-ch-f1/run.sh [NAME ...] (seeds 0..N-1; 1 by default)
run() { name=$1; shift; hebbedge compare split-mnist --learners hebbian --seeds "${SEEDS:-1}" --class-order 0,1,2,3,4,5,6,7,8,9 \
  --set 'model.arch="conv"' --set model.width_factor=1 --set hebbian.lr=0.1 --set hebbian.weight_decay=0.001 \
  --set hebbian.dropout=0.0 --set hebbian.eta=1e-3 --set hebbian.eta_conv=1e-4 --test-size 2000 --device cpu \
  --out runs/table-6.10-conv-ch-f1/$name "$@"; }
# thesis: AdamW on C at the thesis rate; sgdm: SGD with momentum 0.9 on C (the thesis's §6.3 optimizer) at the same rate.
declare -A RUNS=(
  [thesis]=""
  [adamw-lr0.01]="--set hebbian.lr=0.01"
  [adamw-lr0.003]="--set hebbian.lr=0.003"
  [adamw-lr0.001]="--set hebbian.lr=0.001"
  [adamw-lr0.0003]="--set hebbian.lr=0.0003"
  [sgdm]="--set hebbian.optimizer=\"sgd\" --set hebbian.sgd_momentum=0.9"
)
for name in ${@:-thesis adamw-lr0.01 adamw-lr0.003 adamw-lr0.001 adamw-lr0.0003 sgdm}; do run $name ${RUNS[$name]}; done
# The probe of the mechanism (docs/seeds.md; its output is probe.log here):
#   python results/seeds/table-6.10-conv-ch-f1/probe.py --optimizer adamw --lr 0.1 --pairs 01,23   (and the other lines of probe.log)
