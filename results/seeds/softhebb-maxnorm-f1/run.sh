#!/bin/bash
# Diagnostic for issue 21 (docs/seeds.md section 4): SoftHebb at F-1, seed 0, the paper's schedule, with
# each batch's update divided by its largest absolute entry before the rate is applied, as the authors'
# code does (`--normalise max`), from hebbedge's initialisation (radius 3 in the paper's A.1.2
# parametrisation, row norm about 3.8) and from the authors' demo initialisation, 25/sqrt(N) * randn,
# a row norm of about 25 (radius 25 * sqrt(2/pi)). Run from the repository root with HEBBEDGE_DATA set;
# about 20 minutes on two cores.
# The records here were made before `--normalise` and `--radius` existed, by a script that swapped in a
# max-normalised copy of the rule (commit 7624846); the commands give the same weights (checked bitwise on
# a small case). Those records carry "initial_row_norm" (null, or 25) instead of "normalise" and "radius".
set -e
OUT=${OUT:-results/seeds/softhebb-maxnorm-f1}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
hebbedge softhebb mnist --width-factor 1 --normalise max --seed 0 --out $OUT/paper-maxnorm.json &
hebbedge softhebb mnist --width-factor 1 --normalise max --radius 19.947114020071634 --seed 0 --out $OUT/paper-maxnorm-rownorm25.json &
wait
