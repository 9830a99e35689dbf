#!/bin/bash
# Why the paper schedule fell short at F-4 (issue 21): the same comparison at width factor 1, seed 0,
# with the label-free batch and the head's training separated:
#   paper      label-free batch 10, head 50 epochs Adam 1e-3 halved 7 times, dropout 0.5
#   quick      label-free batch 64, head 20 epochs Adam 1e-2, no dropout
#   batch64-paper-head   label-free batch 64 (as quick), the paper's head
# Run from the repository root with HEBBEDGE_DATA set; the two runs go side by side, about 22 minutes on two cores.
set -e
OUT=${OUT:-results/seeds/softhebb-schedule-f1}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
hebbedge softhebb mnist --width-factor 1 --schedule paper --seed 0 --out $OUT/paper.json &
python - "$OUT/batch64-paper-head.json" <<'PY'
import dataclasses, sys
from pathlib import Path
import torch
from hebbedge.benchmarks import softhebb
from hebbedge.files import save_json
from hebbedge.train import load_normalised
softhebb.SCHEDULES["batch64-paper-head"] = dataclasses.replace(softhebb.SCHEDULES["paper"], batch_size=64)
result = softhebb.run(load_normalised("mnist", torch.device("cpu"), None), 1, "batch64-paper-head", seed=0)
print(f"batch64-paper-head: {100 * result['softhebb_test_acc']:.2f} (control {100 * result['random_test_acc']:.2f})")
save_json(Path(sys.argv[1]), result)
PY
wait
