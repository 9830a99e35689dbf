"""Behaviour kept through refactors: every learner's short fixed-seed run reproduces the final
weights and accuracies recorded in tests/golden.json (see tests/golden.py) within RTOL."""

import json
import math

from golden import GOLDEN, run_all

# Relative tolerance. The same run differs across CPUs through the kernels torch and oneDNN pick for
# them (AVX2 against AVX-512): measured on an AVX2-only AMD EPYC against the recording machine, 19 of
# 2,678 floats moved, by at most 1.5e-4 (the conv net's C after 64 images; everything else within 1e-6).
# A change of behaviour moves weights by far more than 1e-3.
RTOL = 1e-3


def _close(a: object, b: object, path: str, errors: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            errors.append(f"{path}: keys {sorted(set(a) ^ set(b))} differ")
        for k in set(a) & set(b):
            _close(a[k], b[k], f"{path}/{k}", errors)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            errors.append(f"{path}: length {len(a)} != {len(b)}")
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]", errors)
    elif isinstance(a, float) and isinstance(b, float):
        if not math.isclose(a, b, rel_tol=RTOL, abs_tol=1e-6):
            errors.append(f"{path}: {a!r} != {b!r}")
    elif a != b:
        errors.append(f"{path}: {a!r} != {b!r}")


def test_every_learner_reproduces_its_golden_run(tmp_path):
    errors: list[str] = []
    _close(run_all(tmp_path), json.loads(GOLDEN.read_text()), "", errors)
    assert not errors, "\n".join(errors[:20])
