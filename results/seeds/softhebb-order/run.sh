#!/bin/bash
# Diagnostic for issue 21 (docs/seeds.md section 4): SoftHebb at F-1, seed 0, the paper's schedule, with
# each layer's Triangle before its pooling (`--order triangle-pool`: the paper's Table 4 and the authors'
# demo code) instead of after it (its appendix A.3 text, hebbedge's default), at the paper's label-free
# batch 10 and at batch 64. Run from the repository root with HEBBEDGE_DATA set; the two runs go side by
# side, about 20 minutes on two cores. F-4 (f4-paper.json; 1 h 24 min on two threads):
#   OMP_NUM_THREADS=2 hebbedge softhebb mnist --width-factor 4 --order triangle-pool --seed 0 --out results/seeds/softhebb-order/f4-paper.json
# The records here were made before `--order` and `--batch-size` existed, by a script that rebuilt each
# layer as (BatchNorm, conv, Triangle, pooling) from the same modules (commit 7624846); the commands give
# the same weights (checked bitwise on a small case). Those records carry no "order" field, and the
# batch-64 one names its schedule "triangle-first".
set -e
OUT=${OUT:-results/seeds/softhebb-order}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
hebbedge softhebb mnist --width-factor 1 --order triangle-pool --seed 0 --out $OUT/f1-paper.json &
hebbedge softhebb mnist --width-factor 1 --order triangle-pool --batch-size 64 --seed 0 --out $OUT/f1-batch64.json &
wait
