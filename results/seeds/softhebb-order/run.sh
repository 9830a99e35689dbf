#!/bin/bash
# Diagnostic for issue 21 (docs/seeds.md section 4): SoftHebb at F-1, seed 0, the paper's schedule, with
# each layer's Triangle before its pooling (Table 4 and the authors' demo code; triangle_first.py), at the
# paper's label-free batch 10 and at batch 64. Run from the repository root with HEBBEDGE_DATA set; the
# two runs go side by side, about 20 minutes on two cores.
set -e
OUT=${OUT:-results/seeds/softhebb-order}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
python results/seeds/softhebb-order/triangle_first.py $OUT/f1-paper.json &
python results/seeds/softhebb-order/triangle_first.py $OUT/f1-batch64.json --batch-size 64 &
wait
