"""The thesis conv net on MNIST at width factors 1 and 4 (seed 0) in one plot: the F-1 run's 50 epochs
beside as many F-4 epochs as this CPU trained (docs/seeds.md section 2).
Usage: python results/seeds/plot-mnist-conv-f1-f4.py"""
from pathlib import Path

from hebbedge.files import read_json
from hebbedge.plots import plot_learning_curves

here = Path(__file__).parent
runs = {f"F-{k}": read_json(here / f"mnist-conv-f{k}-ch-seed0.json", "a `hebbedge train` record") for k in (1, 4)}
print(plot_learning_curves({"benchmark": "mnist CH seed 0", "device": "cpu", "runs": runs}, here / "mnist-conv-f1-f4-ch-seed0.png"))
