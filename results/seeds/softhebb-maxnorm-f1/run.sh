#!/bin/bash
# Diagnostic for issue 21 (docs/seeds.md section 4): SoftHebb at F-1, seed 0, the paper's schedule, with
# each batch's update divided by its largest absolute entry before the rate is applied, as the authors'
# code does (maxnorm.py), from hebbedge's initialisation and from the authors' demo initialisation (row
# norm about 25). Run from the repository root with HEBBEDGE_DATA set; about 20 minutes on two cores.
set -e
OUT=${OUT:-results/seeds/softhebb-maxnorm-f1}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
python results/seeds/softhebb-maxnorm-f1/maxnorm.py $OUT/paper-maxnorm.json &
python results/seeds/softhebb-maxnorm-f1/maxnorm.py $OUT/paper-maxnorm-rownorm25.json --row-norm 25 &
wait
