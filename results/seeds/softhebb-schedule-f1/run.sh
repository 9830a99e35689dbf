#!/bin/bash
# Why the paper schedule fell short at F-4 (issue 21): the same comparison at width factor 1, seed 0,
# with the label-free batch and the head's training separated:
#   paper      label-free batch 10, head 50 epochs Adam 1e-3 halved 7 times, dropout 0.5
#   quick      label-free batch 64, head 20 epochs Adam 1e-2, no dropout
#   batch64-paper-head   label-free batch 64 (as quick), the paper's head
# Run from the repository root with HEBBEDGE_DATA set; the two runs go side by side, about 22 minutes on two cores.
# batch64-paper-head.json was made before `--batch-size` existed, by a script that replaced the schedule's
# batch (its record names that schedule "batch64-paper-head"); the command below trains the same net.
set -e
OUT=${OUT:-results/seeds/softhebb-schedule-f1}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
hebbedge softhebb mnist --width-factor 1 --schedule paper --seed 0 --out $OUT/paper.json &
hebbedge softhebb mnist --width-factor 1 --schedule paper --batch-size 64 --seed 0 --out $OUT/batch64-paper-head.json &
wait
