"""The result tables of README.md and docs/*.md, rebuilt from the records under results/.

    python docs/tables.py           # rewrite every table in place
    python docs/tables.py --check   # exit 1, naming every table that differs from its records

A table stands between `<!-- table: NAME -->` and `<!-- /table -->`; NAME is one of the functions
below (underscores written as dashes), and each reads its own records. Figures quoted from the
papers (the thesis, SoftHebb, FastHebb) are the only numbers written here.
"""

import json
import re
import statistics
import sys
from pathlib import Path
from typing import Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
MARKDOWN = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"(<!-- table: ([\w-]+) -->\n)(.*?)(<!-- /table -->)", re.S)
PROTOCOLS = ("class-incremental", "task-aware")
TABLES: dict[str, Callable[[], str]] = {}
TRANSFER = {"split-mnist-from-fmnist": ("Split-MNIST ← Fashion-MNIST", "Split-MNIST ← FMNIST"),
            "split-fmnist-from-mnist": ("Split-Fashion-MNIST ← MNIST", "Split-FMNIST ← MNIST")}
LDA = {"random-lda": "`random-lda` (control: same block, never trained)",
       "softhebb-lda": "`softhebb-lda` (block pre-trained by SoftHebb on the host)"}


def table(function: Callable[[], str]) -> Callable[[], str]:
    TABLES[function.__name__.replace("_", "-")] = function
    return function


def load(path: str) -> dict:
    return json.loads((RESULTS / path).read_text())


def markdown(header: list[str], rows: list[list]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines)


def pct(x: float, digits: int = 2) -> str:
    return f"{100 * x:.{digits}f}"


def mean_std(stat: list[float] | None) -> str:
    """A [mean, std] pair of fractions, as a compare report's results.json holds it, in percent."""
    return "n/a" if stat is None else f"{100 * stat[0]:.1f} ± {100 * stat[1]:.1f}"


def seed_mean(stat: list[float], seeds: int) -> str:
    """mean_std, or the mean alone when one seed has run (its std of 0 says nothing)."""
    return mean_std(stat) if seeds > 1 else f"{100 * stat[0]:.1f}"


def lr(x: float) -> str:
    return f"{x:.0e}".replace("e-0", "e-")


def final(run: dict, protocol: str = "class-incremental") -> float:
    return run["protocols"][protocol]["final_avg_acc"]


# README.md


@table
def headline() -> str:
    compare = load("compare-split-mnist/results.json")
    fp32 = [r for r in load("edge-check-softhebb-lda/check.json")["rows"] if r["precision"] == "fp32"]
    bench = load("bench-mnist-linear-4x500-20ep.json")["summary"]
    docs = "[docs/continual.md](docs/continual.md)"
    rows = [[f"Hebbian learner, Split-MNIST (784-1000-1000, {compare['seeds']} seeds)", p,
             *(mean_std(compare["summary"][learner][p]["final_avg_acc"]) for learner in ("hebbian", "random", "naive")), docs]
            for p in PROTOCOLS]
    for scenario, (name, _) in TRANSFER.items():
        transfer = load(f"transfer-{scenario}/results.json")
        rows.append([f"LDA readout on SoftHebb features pre-trained on the host, {name} ({transfer['seeds']} seeds)",
                     "class-incremental", *(mean_std(transfer["summary"][learner]["class-incremental"]["final_avg_acc"])
                                            for learner in ("softhebb-lda", "random-lda")), "–", docs])
    rows.append([f"that readout learning Split-MNIST's experiences 3–5 on the device (seed 0; fp32 on {len(fp32)} runtimes)",
                 "class-incremental", " / ".join(sorted({pct(r["average"]) for r in fp32})), "–", "–", "[docs/edge.md](docs/edge.md)"])
    rows.append(["Hebbian learner, i.i.d. MNIST (4×500 tanh, 20 epochs, seed 0)", "i.i.d.", pct(bench["hebbian"]["test_acc"]),
                 pct(bench["random"]["test_acc"]), f"{pct(bench['adam']['test_acc'])} (Adam)", "[docs/benchmark.md](docs/benchmark.md)"])
    return markdown(["learner, stream", "protocol", "accuracy (%)", "random-features control", "backprop", "details"], rows)


# docs/continual.md


@table
def compare_split_mnist() -> str:
    metrics = ("final_avg_acc", "forgetting", "bwt")
    header = ["learner"] + [f"{p}: {m.replace('_', ' ')}" for p in PROTOCOLS for m in metrics]
    return markdown(header, [[learner] + [mean_std(s[p][m]) for p in PROTOCOLS for m in metrics]
                             for learner, s in load("compare-split-mnist/results.json")["summary"].items()])


@table
def readout_split_mnist() -> str:
    runs = load("readout-split-mnist/results.json")["runs"]
    names = {"random-lda": "`random-lda` (this readout: exact covariance, one GEMM per batch)",
             "slda": "`slda` (Avalanche: running covariance, one d×d update per sample)"}
    rows = [[names[learner], f"{pct(final(run))}%", f"{pct(final(run, 'task-aware'))}%",
             f"{load(f'readout-split-mnist/{learner}/seed0/metrics.json')['seconds']:.1f} s"]
            for learner, (run,) in runs.items()]
    return markdown(["learner (784-1000-1000 random tanh features, shrinkage 1e-4)", "class-incremental final avg acc",
                     "task-aware", "run time (train + 5 evaluations)"], rows)


@table
def transfer() -> str:
    rows = []
    for scenario, (name, _) in TRANSFER.items():
        results = load(f"transfer-{scenario}/results.json")
        for learner, label in LDA.items():
            s, runs = results["summary"][learner], results["runs"][learner]
            rows.append([name, label, *(mean_std(s["class-incremental"][m]) for m in ("final_avg_acc", "forgetting", "bwt")),
                         mean_std(s["task-aware"]["final_avg_acc"]), ", ".join(pct(final(r)) for r in runs)])
    return markdown(["scenario (stream ← host)", "learner", "class-incremental final avg acc", "forgetting", "BWT",
                     "task-aware final avg acc", "per seed (class-incremental)"], rows)


ABLATION = [  # (what changed, the folder's suffix, its --set options); the first row is the 5-seed run's seed 0
    ("none (the scenario config: 16 channels, SoftHebb η 0.08, 1/τ 1, 1 epoch on the host)", None,
     "(the 5-seed command above, seed 0)"),
    ("the block keeps learning (SoftHebb, label-free) through the whole stream: the stored sums go stale",
     "learn_experiences5", "`--set readout.learn_experiences=5`"),
    ("… through the first experience only, then fixed", "learn_experiences1", "`--set readout.learn_experiences=1`"),
    ("no host data: the block learns during the first experience only (in-stream pre-training)", "first-experience",
     "`--set readout.pretrain_epochs=0 --set readout.learn_experiences=1`"),
    ("no host data, warm-up: the block learns on the first half of the first experience, which the readout never sums, "
     "then is fixed", "warmup-no-host", "`--set readout.pretrain_epochs=0 --set readout.warmup=0.5`"),
    ("host pre-training, then the same warm-up on the stream", "warmup", "`--set readout.warmup=0.5`"),
    ("32 channels (512 features)", "channels32", "`--set readout.channels=32`"),
    ("96 channels (1536 features; the SoftHebb paper's first layer)", "channels96", "`--set readout.channels=96`"),
    ("3 pre-training epochs on the host", "pretrain_epochs3", "`--set readout.pretrain_epochs=3`"),
    ("SoftHebb rate η 0.02", "eta0.02", "`--set readout.eta=0.02`"),
    ("harder competition, 1/τ 2", "inv_tau2.0", "`--set readout.inv_tau=2.0`"),
]


@table
def ablation() -> str:
    rows = []
    for change, suffix, options in ABLATION:
        row = [change]
        for scenario in TRANSFER:
            runs = load(f"ablation-{scenario}-{suffix}/results.json" if suffix else f"transfer-{scenario}/results.json")["runs"]
            control, learner = (final(next(r for r in runs[name] if r["run"]["seed"] == 0)) for name in LDA)
            row += [pct(control), pct(learner), f"{100 * (learner - control):+.2f}"]
        rows.append(row + [options])
    a, b = (short for _, short in TRANSFER.values())
    return markdown(["change to the config", f"{a}: control", "learner", "Δ", f"{b}: control", "learner", "Δ", "`--set`"], rows)


RERUNS = {"eta0.02": "SoftHebb rate η 0.02", "warmup-no-host": "no host data, warm-up on the stream",
          "warmup": "host pre-training, then the warm-up"}


@table
def transfer_reruns() -> str:
    rows = []
    for suffix, change in RERUNS.items():
        for scenario, (name, _) in TRANSFER.items():
            results = load(f"transfer-{scenario}-{suffix}/results.json")
            control, learner = (results["summary"][n]["class-incremental"] for n in LDA)
            pairs = list(zip(*(results["runs"][n] for n in LDA)))
            ahead = sum(final(b) > final(a) for a, b in pairs)
            rows.append([change, name, mean_std(control["final_avg_acc"]), mean_std(learner["final_avg_acc"]),
                         f"{100 * (learner['final_avg_acc'][0] - control['final_avg_acc'][0]):+.1f}", f"{ahead} of {len(pairs)}",
                         f"{100 * control['forgetting'][0]:.1f} / {100 * learner['forgetting'][0]:.1f}"])
    return markdown(["setting (5 seeds)", "scenario (stream ← host)", "control", "learner", "Δ", "learner ahead on seeds",
                     "forgetting: control / learner"], rows)


# docs/edge.md


def check_table(folder: str) -> str:
    """An `hebbedge edge check --out FOLDER` matrix."""
    rows = [[r["runtime"], r["precision"], f"{pct(r['agreement'])}%", f"{r['max_logit_error']:.1e}",
             " / ".join(pct(a) for a in r["accuracy"]), pct(r["average"]), f"{r['predict_ms']:.3f}", f"{r['learn_ms']:.2f}",
             f"{r['refresh_ms']:.1f}", f"{r['peak_rss_mb']:.0f}", f"{r['size_mb']:.2f}"]
            for r in load(f"{folder}/check.json")["rows"]]
    return markdown(["runtime", "precision", "agrees with ORT fp32", "max logit error", "final row (%)", "average (%)",
                     "predict b1 (ms)", "learn b64 (ms)", "refresh (ms)", "peak RSS (MB)", "files (MB)"], rows)


@table
def edge_check() -> str:
    return check_table("edge-check-softhebb-lda")


@table
def edge_check_conv_lda() -> str:
    return check_table("edge-check-conv-lda")


# docs/benchmark.md


def bench(path: str, names: dict[str, str]) -> list[list[str]]:
    """One row per learner of an i.i.d. benchmark: its name and its test accuracy."""
    return [[name, f"{pct(load(path)['summary'][learner]['test_acc'])}%"] for learner, name in names.items()]


def tuned(tuning: dict | None) -> str:
    """The learning rate a backprop run chose, and the ones it tried."""
    return f"{lr(tuning['lr'])} (of {', '.join(lr(float(x)) for x in tuning['val_acc_by_lr'])})" if tuning else ""


@table
def bench_linear() -> str:
    path = "bench-mnist-linear-4x500-20ep.json"
    names = {"hebbian": "Hebbian (contrastive + Hebbian descent, C by AdamW)",
             "random": "random-features control (hidden weights never trained)",
             "adam": "backprop, Adam", "sgd": "backprop, SGD-momentum"}
    runs = load(path)["runs"]
    rows = [row + [tuned(runs[learner].get("tuning"))] for row, learner in zip(bench(path, names), names)]
    rows[0][-1] = "(thesis settings)"
    return markdown(["learner (4×500 tanh, batch 32, 20 epochs, CPU)", "test accuracy", "tuned lr"], rows)


@table
def bench_conv() -> str:
    path = "bench-mnist-conv-f1-1ep-10k.json"
    runs = load(path)["runs"]
    hebbian, adam, sgd = (runs[name]["config"] for name in ("hebbian", "adam", "sgd"))
    return markdown(["conv F-1, 10k samples, 1 epoch, CPU", "test accuracy"], bench(path, {
        "hebbian": f"Hebbian (η_conv = {lr(hebbian['eta_conv'])}, η_linear = {lr(hebbian['eta'])})",
        "random": "random-features control",
        "adam": f"backprop, Adam (lr {lr(adam['lr'])}, tuned)", "sgd": f"backprop, SGD-momentum (lr {lr(sgd['lr'])}, tuned)"}))


# docs/speed.md

NETS = {"linear": "784-2000×4-10", "conv-f1": "conv F-1", "conv-f4": "conv F-4"}
MODES = {"c-train": "C training", "frozen": "C frozen, β 0.9", "frozen-no-momentum": "C frozen, β 0", "sgd": "backprop SGD",
         "sgd-momentum": "backprop SGD, momentum 0.9", "adam": "backprop Adam", "inference": "forward only"}


def speed_rows(**setting: int | str) -> dict[str, dict]:
    """The speed run's rows with these settings, by mode."""
    return {r["mode"]: r for r in load("speed/speed.json")["rows"] if all(r[k] == v for k, v in setting.items())}


@table
def speed() -> str:
    run, rows = load("speed/speed.json"), []
    for arch, net in NETS.items():
        modes = speed_rows(arch=arch, width=run["width"], batch=run["batch"])
        sgd = modes["sgd"]
        rows += [[f"{net}, batch {run['batch']}", MODES[m], f"{r['ms']:.1f}", f"{r['ms'] / sgd['ms']:.2f}", f"{r['peak_mb']:.0f}",
                  f"{r['peak_mb'] / sgd['peak_mb']:.2f}"] for m in MODES if (r := modes.get(m))]
    return markdown(["net", "mode", "step (ms)", "× SGD", "peak memory (MB)", "× SGD"], rows)


@table
def speed_onnx() -> str:
    runs = load("speed/speed.json")["onnx_latency_ms"]
    return markdown(["ONNX Runtime vs PyTorch eager (linear net, CPU)", *(f"batch {r['batch']}" for r in runs)], [
        ["PyTorch eager", *(f"{r['pytorch eager']:.2f} ms" for r in runs)],
        ["ONNX Runtime", *(f"{r['onnxruntime']:.2f} ms" for r in runs)],
        ["ratio", *(f"{r['onnxruntime'] / r['pytorch eager']:.2f}" for r in runs)]])


def sweep(key: str, values: list[int], **fixed: int) -> str:
    """C training and frozen C against SGD, as the batch or the width grows (linear net)."""
    modes = [speed_rows(arch="linear", **fixed, **{key: v}) for v in values]
    return markdown([key, *map(str, values)], [
        ["C training / SGD time", *(f"{m['c-train']['ms']:.1f} / {m['sgd']['ms']:.1f} ms" for m in modes)],
        ["C frozen / SGD time", *(f"{m['frozen']['ms']:.1f} / {m['sgd']['ms']:.1f} ms" for m in modes)],
        ["C frozen / SGD memory", *(f"{m['frozen']['peak_mb']:.0f} / {m['sgd']['peak_mb']:.0f} MB" for m in modes)]])


@table
def speed_batch() -> str:
    return sweep("batch", [16, 64, 256, 512], width=2000)


@table
def speed_width() -> str:
    return sweep("width", [500, 1000, 2000, 4000], batch=64)


# docs/seeds.md


@table
def seeds_mnist_linear() -> str:
    run = load("seeds/mnist-linear-ch-seed0.json")
    best = run["history"][run["best_epoch"] - 1]
    last = run["history"][-1]
    state = (f" (best validation); {pct(last['test_acc'])} after the last epoch" if run["finished"] else
             f", still training (best validation epoch so far: {run['best_epoch']}, validation {pct(run['best_val_acc'])})")
    ours = f"{pct(best['test_acc'])} at epoch {run['best_epoch']} of {run['config']['epochs']}{state}"
    return markdown(["", "thesis (5 runs)", "ours (seed 0)"], [["CH, test accuracy", "96.98 ± 0.11 (100 epochs)", ours]])


def epochs(path: str) -> str:
    """Validation and test accuracy per epoch, ten epochs to a pair of rows so a 100-epoch run stays readable."""
    history = load(path)["history"]
    rows = []
    for start in range(0, len(history), 10):
        block = history[start:start + 10]
        span = f"{block[0]['epoch']}–{block[-1]['epoch']}"
        rows += [[f"{span} {name}", *(pct(h[key]) for h in block), *[""] * (10 - len(block))]
                 for name, key in (("validation", "val_acc"), ("test", "test_acc"))]
    return markdown(["epochs", "1st", "2nd", "3rd", *(f"{k}th" for k in range(4, 11))], rows)


@table
def seeds_mnist_linear_epochs() -> str:
    return epochs("seeds/mnist-linear-ch-seed0.json")


@table
def seeds_mnist_conv_epochs() -> str:
    return epochs("seeds/mnist-conv-f1-ch-seed0.json")


THESIS_6_10 = {  # thesis Table 6.10 per net: average accuracy, and the final accuracy on each experience
    "linear": {"hebbian": ("CH linear", "80.9 ± 1.1", ["87.0", "84.5", "64.3", "95.2", "73.5"]),
               "naive": ("BP linear", "81.4 ± 0.4", ["89.3", "82.7", "59.6", "96.5", "79.2"])},
    "conv": {"hebbian": ("CH conv", "84.8 ± 1.7", ["80.4", "88.5", "68.1", "97.2", "89.7"]),
             "naive": ("BP conv", "77.3 ± 3.6", ["75.6", "71.1", "51.4", "97.2", "91.2"])}}


def experience_means(runs: list[dict], protocol: str, diagonal: bool = False) -> list[float]:
    """Each experience's accuracy, mean over the runs (seeds): at the end (the mean accuracy matrix's last
    row, as the report's plots show it), or right after it was trained (its diagonal)."""
    from hebbedge.report import mean_matrix

    m = mean_matrix(runs, protocol)
    return [m[j][j] for j in range(len(m))] if diagonal else m[-1]


def table_6_10(net: str) -> dict:
    """One net's Table 6.10 compare record (its "summary" and "runs")."""
    return load(f"seeds/table-6.10-{net}/results.json")


def table_6_10_finals(net: str) -> Iterator[tuple[str, str, str, int, dict[str, str]]]:
    """Per learner of one net: its thesis name and figure, its number of seeds, and its final average
    accuracy per protocol (`seed_mean`)."""
    record = table_6_10(net)
    for learner, (name, thesis, _) in THESIS_6_10[net].items():
        n = len(record["runs"][learner])
        yield learner, name, thesis, n, {p: seed_mean(record["summary"][learner][p]["final_avg_acc"], n) for p in PROTOCOLS}


@table
def seeds_table_6_10() -> str:
    rows = [[f"{name} (`{learner}`)", p, thesis if p == "task-aware" else "—", final[p], n]
            for net in THESIS_6_10 for learner, name, thesis, n, final in table_6_10_finals(net) for p in PROTOCOLS]
    return markdown(["learner", "protocol", "thesis Table 6.10 (5 runs)", "ours (mean ± std over seeds)", "seeds"], rows)


@table
def seeds_table_6_10_experiences() -> str:
    rows = []
    for net, learners in THESIS_6_10.items():
        runs = table_6_10(net)["runs"]
        for learner, (name, _, thesis) in learners.items():
            rows.append([f"{name}, thesis", "not stated", *thesis])
            for p in PROTOCOLS:
                rows.append([f"{name}, ours", p, *(pct(v, 1) for v in experience_means(runs[learner], p))])
    classes = table_6_10("linear")["runs"]["hebbian"][0]["classes_per_experience"]
    return markdown(["learner", "protocol", *(f"exp {j + 1} ({','.join(map(str, c))})" for j, c in enumerate(classes))], rows)


@table
def seeds_table_6_10_conv_learning() -> str:
    """Task-aware accuracy on each pair right after it was trained (the matrix's diagonal): does the conv net learn each new pair?"""
    def row(name: str, run: dict) -> list[str]:
        m = run["protocols"]["task-aware"]["matrix"]
        return [name, *(pct(m[j][j], 1) for j in range(5)), pct(final(run, "task-aware"), 1)]

    conv = table_6_10("conv")["runs"]
    rows = [row(f"{THESIS_6_10['conv'][learner][0]}, F-4, 60,000 images, thesis rates", conv[learner][0]) for learner in ("hebbian", "naive")]
    for folder, setting in (("adam3e-4-60k", "Adam 3e-4, 60,000 images"), ("adam3e-4-10k", "Adam 3e-4, 10,000 images"),
                            ("adam1e-4-10k", "Adam 1e-4, 10,000 images"), ("sgdm3e-4-10k", "SGD with momentum 0.9, 3e-4, 10,000 images")):
        rows.append(row(f"BP conv, F-1, {setting}", load(f"seeds/table-6.10-conv-bp-f1/{folder}/results.json")["runs"]["naive"][0]))
    return markdown(["run (seed 0)", *(f"exp {j + 1}" for j in range(5)), "final avg (task-aware)"], rows)


CH_CONV_F1 = {"thesis": "AdamW, lr 0.1 (the thesis's rate)", "adamw-lr0.01": "AdamW, lr 0.01", "adamw-lr0.003": "AdamW, lr 0.003",
              "adamw-lr0.001": "AdamW, lr 0.001", "adamw-lr0.0003": "AdamW, lr 0.0003",
              "sgdm": "SGD with momentum 0.9, lr 0.1 (the thesis's optimizer and rate)"}


@table
def seeds_table_6_10_conv_ch_optimizer() -> str:
    """CH conv at F-1 under the Table 6.10 protocol, by C's optimizer and learning rate: each pair right after it
    was trained, each pair at the end (task-aware), and the final averages."""
    runs = [("F-1", setting, load(f"seeds/table-6.10-conv-ch-f1/{folder}/results.json")) for folder, setting in CH_CONV_F1.items()]
    runs += [("F-4", CH_CONV_F1["thesis"], table_6_10("conv")), ("F-4", CH_CONV_F1["adamw-lr0.001"], load("seeds/table-6.10-conv-lr0.001/results.json"))]
    rows = []
    for width, setting, record in runs:
        seeds, n, summary = record["runs"]["hebbian"], len(record["runs"]["hebbian"]), record["summary"]["hebbian"]
        rows.append([width, setting, n, *(" / ".join(pct(v, 1) for v in experience_means(seeds, "task-aware", diagonal)) for diagonal in (True, False)),
                     *(seed_mean(summary[p]["final_avg_acc"], n) for p in ("task-aware", "class-incremental"))])
    return markdown(["net", "C's optimizer", "seeds", "right after training, pairs 1–5 (mean over seeds)",
                     "at the end, pairs 1–5 (mean over seeds)", "final avg, task-aware", "final avg, class-incremental"], rows)


def progress(run: dict) -> tuple[str, str]:
    """An i.i.d. run's test accuracy at its best validation epoch, and how far it got with its trend."""
    history, total = run["history"], run["config"]["epochs"]
    best = history[run["best_epoch"] - 1]
    ours = f"{pct(best['test_acc'])} (epoch {run['best_epoch']})"
    if run["finished"]:
        return ours, f"done, {total} epochs"
    last = history[-3:]
    gain = 100 * (last[-1]["val_acc"] - last[0]["val_acc"]) / max(1, len(last) - 1)
    return ours, f"{len(history)} of {total} epochs; validation {gain:+.2f} points per epoch over the last {len(last)}"


@table
def seeds_headline() -> str:
    f1, f4 = (load(f"seeds/mnist-conv-f{k}-ch-seed0.json") for k in (1, 4))  # F-4: as many epochs as this CPU trained
    linear, conv = progress(load("seeds/mnist-linear-ch-seed0.json")), progress(f1)
    f4_epochs = len(f4["history"])
    softhebb = load("seeds/softhebb-mnist-f4-paper-seed0.json")
    curve = "[PNG](results/seeds/{})".format
    rows = [["thesis, MNIST, CH linear (4×2000 tanh, batch 32, 100 epochs)", "96.98 ± 0.11", linear[0], linear[1],
             curve("mnist-linear-ch-seed0.png")],
            ["thesis, MNIST, CH conv (F-4, 50 epochs)", "99.04",
             f"F-1: {conv[0]}; F-4 after epoch {f4_epochs}: {pct(f4['history'][-1]['test_acc'])} "
             f"(F-1 after epoch {f4_epochs}: {pct(f1['history'][f4_epochs - 1]['test_acc'])})",
             f"F-1 {conv[1]}; F-4 {f4_epochs} of {f4['config']['epochs']} epochs "
             f"({f4['seconds'] / f4_epochs / 60:.0f} min per epoch on one core; all {f4['config']['epochs']} need a GPU)",
             curve("mnist-conv-f1-f4-ch-seed0.png")]]
    slow = load("seeds/table-6.10-conv-lr0.001/results.json")  # C by AdamW at lr 0.001
    n_slow = slow["seeds"]
    for net in THESIS_6_10:
        for learner, name, thesis, n, finals in table_6_10_finals(net):
            ci, ta = (finals[p] for p in PROTOCOLS)
            how_far = f"done, {n} seed{'s' * (n > 1)}" + ("" if n == 5 else " of 5")
            png = curve(f"table-6.10-{net}/experience_accuracy_task-aware.png")
            if (net, learner) == ("conv", "hebbian"):
                how_far += (f"; C by AdamW at lr 0.001 instead of 0.1, {n_slow} seed{'s' * (n_slow > 1)}: "
                            + ", ".join(f"{seed_mean(slow['summary']['hebbian'][p]['final_avg_acc'], n_slow)} {p}" for p in PROTOCOLS)
                            + " (why: docs/seeds.md section 3)")
                png += ", " + curve("table-6.10-conv-lr0.001/experience_accuracy_task-aware.png")
            rows.append([f"thesis Table 6.10, Split-MNIST, {name}{', F-4' if net == 'conv' else ''} (1 epoch per experience, batch 64)",
                         thesis, f"{ci} class-incremental, {ta} task-aware", how_far, png])
    first = load("seeds/softhebb-order/f4-paper.json")  # Triangle before pooling, as in the paper's Table 4
    b64 = [load(f"seeds/softhebb-order/f4-batch64{tail}.json") for tail in ("", "-seed1")]  # the same, label-free batch 64
    rows.append(["SoftHebb paper, MNIST (F-4, its schedule)", "99.35 ± 0.03",
                 f"{pct(softhebb['softhebb_test_acc'])} (random-weights control {pct(softhebb['random_test_acc'])}); "
                 f"Triangle before pooling as in its Table 4: {pct(first['softhebb_test_acc'])} (control {pct(first['random_test_acc'])})",
                 "done, 1 seed of the paper's 4; Table 4's order at label-free batch 64 instead of 10, seeds 0 and 1: "
                 + ", ".join(f"{pct(r['softhebb_test_acc'])} (control {pct(r['random_test_acc'])})" for r in b64)
                 + "; why it differs: docs/seeds.md section 4",
                 f"{curve('softhebb-mnist-f4-paper-seed0.png')}, {curve('softhebb-order/f4-paper.png')}"])
    return markdown(["paper's headline, setting", "paper", "ours, same setting (seed 0 unless stated)", "how far", "curve"], rows)



@table
def seeds_table_6_10_optimizer() -> str:
    """BP linear's final accuracy per experience under the thesis's optimizer (SGD with momentum) and ours (Adam)."""
    name, thesis_avg, thesis = THESIS_6_10["linear"]["naive"]
    rows = [[f"{name}, thesis (SGD with momentum)", "not stated", *thesis, thesis_avg]]
    for optimizer, path in (("Adam, 5 seeds", "seeds/table-6.10-linear"), ("SGD with momentum 0.9, seed 0", "seeds/table-6.10-linear-sgdm")):
        runs = load(f"{path}/results.json")["runs"]["naive"]
        for p in PROTOCOLS:
            rows.append([f"{name}, ours ({optimizer})", p, *(pct(v, 1) for v in experience_means(runs, p)),
                         f"{100 * statistics.fmean(r['protocols'][p]['final_avg_acc'] for r in runs):.1f}"])
    return markdown(["learner", "protocol", *(f"exp {j + 1}" for j in range(5)), "average"], rows)


# docs/learners.md


@table
def fasthebb() -> str:
    rules = load("fasthebb-bench.json")["rules"]
    paper = {"swta": "14×", "hpca": "20×"}  # the FastHebb paper's speed-ups
    rows = [[rule.upper(), f"{r['per_patch_epoch_seconds']:.0f} s", f"{r['fasthebb_epoch_seconds']:.1f} s", f"{r['speedup']:.1f}×",
             paper[rule]] for rule, r in rules.items()]
    return markdown(["rule", "per-patch (two-phase: every patch's update built, then aggregated)", "FastHebb", "speed-up", "paper"], rows)


@table
def semisup() -> str:
    results = load("semisup-mnist-hpca.json")["results"]
    accuracy = {(r["features"], r["fraction"]): r["test_acc"] for r in results}
    rows = [[f"{r['fraction']:.0%} ({r['labelled']})", f"{pct(r['test_acc'])}%", f"{pct(accuracy['random', r['fraction']])}%"]
            for r in results if r["features"] == "hebbian"]
    return markdown(["labelled (MNIST, 784-1000 tanh, HPCA, 1 epoch of pre-training)", "HPCA features", "random features"], rows)


@table
def softhebb_mnist() -> str:
    runs = (load("seeds/softhebb-order/f4-paper.json"), load("seeds/softhebb-mnist-f4-paper-seed0.json"),
            load("seeds/softhebb-order/f4-batch64.json"), load("softhebb-mnist-f4.json"), load("softhebb-mnist-f1.json"))
    return markdown(["MNIST, 60k images, 1 epoch per layer, CPU (i.i.d.), seed 0", "F-4, `paper`, Triangle before pooling (Table 4)",
                     "F-4, `paper` schedule", "F-4, `paper` head, label-free batch 64, Triangle before pooling",
                     "F-4, `quick`", "F-1, `quick`"], [
        ["SoftHebb features + linear head", *(f"{pct(r['softhebb_test_acc'])}%" for r in runs)],
        ["random-weights control (same net, same head)", *(f"{pct(r['random_test_acc'])}%" for r in runs)],
        ["*paper*", "*99.35 ± 0.03*", "*99.35 ± 0.03*", "", "", ""]])


@table
def fleet() -> str:
    from hebbedge.export.fleet import markdown_table  # the fleet report's own table

    return markdown_table(load("fleet/summary.json"))


# docs/domain-incremental.md

DOMAIN = {"frozen-c": "`frozen-c` (C by backprop on experience 1, then frozen: backprop-free updates)",
          "hebbian": "`hebbian` (C trained by backprop throughout)", "random": "`random` (control: hidden layers never learn)",
          "naive": "`naive` (backprop fine-tuning)", "random-lda": "`random-lda` (LDA readout, fixed random features)",
          "randumb": "`randumb` (LDA readout, random Fourier features)", "joint": "`joint` (whole stream at once, 1 epoch)"}


def domain(folder: str) -> str:
    """A domain-incremental comparison, from each finished run's metrics.json (learners may have different
    numbers of seeds). Every experience holds all ten classes, so the task-aware protocol is the
    class-incremental one: checked on every run's matrices, and one set of columns serves."""
    def stat(values: list[float | None]) -> str:  # mean ± std over seeds, as hebbedge compare's report gives it
        values = [v for v in values if v is not None]  # joint has no forgetting, nor a matrix diagonal
        return mean_std([statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0]) if values else "n/a"

    rows, sizes = [], set()
    for learner, name in DOMAIN.items():
        runs = [json.loads(path.read_text()) for path in sorted((RESULTS / folder / learner).glob("seed*/metrics.json"))]
        if not runs:
            continue
        if any(r["protocols"]["class-incremental"]["matrix"] != r["protocols"]["task-aware"]["matrix"] for r in runs):
            raise ValueError(f"{folder}/{learner}: the two protocols differ on a domain-incremental stream")
        ci = [r["protocols"]["class-incremental"] for r in runs]
        sizes |= {(r["run"]["train_size"], r["run"]["test_size"], r["run"]["epochs"]) for r in runs}

        rows.append([name, ",".join(str(r["run"]["seed"]) for r in runs), stat([p["final_avg_acc"] for p in ci]),
                     stat([p["forgetting"] for p in ci]), stat([p["bwt"] for p in ci]),
                     stat([statistics.fmean(row[i] for i, row in enumerate(p["matrix"])) if len(p["matrix"]) > 1 else None for p in ci]),
                     f"{statistics.fmean(r['seconds'] for r in runs):.0f} s"])
    if len(sizes) > 1:
        raise ValueError(f"{folder}: runs of different sizes or epochs {sorted(sizes, key=str)} in one table")
    return markdown(["learner", "seeds", "final avg acc", "forgetting", "BWT", "accuracy right after learning (avg)",
                     "wall time per run (shared CPU)"], rows)


@table
def domain_permuted_mnist() -> str:
    return domain("domain-permuted-mnist")


@table
def domain_rotated_mnist() -> str:
    return domain("domain-rotated-mnist")


@table
def domain_full_permuted_mnist() -> str:
    return domain("domain-full-permuted-mnist")


@table
def domain_full_rotated_mnist() -> str:
    return domain("domain-full-rotated-mnist")


# docs/frontier.md

FRONTIER = {"conv-lda": "`conv-lda`: random 5×5 conv bank, 128 channels × 4², OAS", "randumb": "`randumb`: random Fourier features of the pixels, OAS",
            "random-lda": "`random-lda`: random 784-1000-1000 tanh MLP, λ 1e-4", "naive": "`naive` (backprop fine-tuning)",
            "ewc": "`ewc`, tuned", "si": "`si`, tuned", "lwf": "`lwf`, tuned", "replay": "`replay`, tuned (stores samples)",
            "joint": "`joint` (all experiences at once)"}


def two(stat: list[float] | None) -> str:
    """mean ± std in percent to the hundredth (the goal is stated to the tenth)."""
    return "n/a" if stat is None else f"{100 * stat[0]:.2f} ± {100 * stat[1]:.2f}"


FRONTIER_COLUMNS = ["learner", "seeds", "class-incr. final avg acc", "forgetting", "BWT", "task-aware", "features",
                    "readout state (MB, float32)", "training (ms/sample, as run)"]


def frontier_rows(report: dict, names: dict[str, str]) -> list[list]:
    """One row per learner of `names` found in a compare report, in FRONTIER_COLUMNS."""
    rows = []
    for learner, name in names.items():
        if learner not in report["summary"]:
            continue
        s, cost = report["summary"][learner], report["cost"][learner]
        ms = cost["ms_per_sample"]
        rows.append([name, len(report["runs"][learner]), *(two(s["class-incremental"][m]) for m in ("final_avg_acc", "forgetting", "bwt")),
                     two(s["task-aware"]["final_avg_acc"]), cost["features"],
                     "n/a" if cost["readout_state_bytes"] is None else f"{cost['readout_state_bytes'] / 1e6:.1f}",
                     "n/a" if ms is None else f"{ms[0]:.2f} ± {ms[1]:.2f}" + (f" ({cost['timed_runs']} timed)" if cost["timed_runs"] < len(report["runs"][learner]) else "")])
    return rows


def frontier(stream: str) -> str:
    return markdown(FRONTIER_COLUMNS, frontier_rows(load(f"frontier-{stream}/results.json"), FRONTIER))


@table
def frontier_split_mnist() -> str:
    return frontier("split-mnist")


@table
def frontier_split_fashion_mnist() -> str:
    return frontier("split-fashion-mnist")


@table
def frontier_randumb_width() -> str:
    """randumb at the issue's budget (2048, the 5-seed runs above) and at its code's default width (10000)."""
    rows = []
    for stream, label in (("split-mnist", "Split-MNIST"), ("split-fashion-mnist", "Split-FMNIST")):
        for folder, width in ((f"frontier-{stream}", 2048), (f"frontier-{stream}-randumb10000", 10000)):
            if (RESULTS / folder / "results.json").exists():
                rows += frontier_rows(load(f"{folder}/results.json"), {"randumb": f"{label}: `randumb`, {width} features"})
    return markdown(FRONTIER_COLUMNS, rows)


@table
def frontier_timing() -> str:
    runs = {(learner, batch): load(f"frontier-timing/timing-{learner}-batch{batch}.json")
            for learner in ("randumb", "conv-lda") for batch in (1, 64)}
    steps = list(next(iter(runs.values()))["median_seconds"])
    return markdown(["step (median ms per sample; refresh: per call)", *(f"`{learner}`, batch {batch}" for learner, batch in runs)],
                    [[step, *(f"{1e3 * r['median_seconds'][step]:.2f}" for r in runs.values())] for step in steps])


@table
def softhebb_schedule_f1() -> str:
    """SoftHebb at F-1, seed 0: the label-free batch, the update's aggregation (mean over patches, or
    divided by its largest entry as the authors' code does), the initial row norm, where Triangle sits in a
    layer, and the head's training, varied one or two at a time."""
    head = {"paper": "50 epochs, Adam 1e-3 halved 7 times, dropout 0.5", "quick": "20 epochs, Adam 1e-2, no dropout"}
    after, before = "after pooling (A.3)", "before pooling (Table 4, demo)"
    runs = (("10 (paper), mean", after, head["paper"], "seeds/softhebb-schedule-f1/paper.json"),
            ("64, mean", after, head["paper"], "seeds/softhebb-schedule-f1/batch64-paper-head.json"),
            ("64, mean", after, head["quick"], "softhebb-mnist-f1.json"),
            ("10 (paper), max-normalised", after, head["paper"], "seeds/softhebb-maxnorm-f1/paper-maxnorm.json"),
            ("10 (paper), max-normalised, row norm 25 (demo)", after, head["paper"],
             "seeds/softhebb-maxnorm-f1/paper-maxnorm-rownorm25.json"),
            ("10 (paper), mean", before, head["paper"], "seeds/softhebb-order/f1-paper.json"),
            ("64, mean", before, head["paper"], "seeds/softhebb-order/f1-batch64.json"))
    rows = []
    for batch, order, probe, path in runs:
        r = load(path)
        rows.append([batch, order, probe, pct(r["softhebb_test_acc"]), pct(r["random_test_acc"]),
                     f"{100 * (r['softhebb_test_acc'] - r['random_test_acc']):+.2f}"])
    return markdown(["label-free batch, update", "Triangle", "linear head", "SoftHebb", "random-weights control",
                     "SoftHebb − control"], rows)


def fill(text: str) -> tuple[str, list[str]]:
    """The text with every table regenerated, and the names of the tables that changed."""
    stale = []

    def one(match: re.Match) -> str:
        new = f"\n{TABLES[match[2]]()}\n\n"
        if new != match[3]:
            stale.append(match[2])
        return match[1] + new + match[4]

    return MARKER.sub(one, text), stale


def main(check: bool) -> int:
    problems, used = [], set()
    for path in MARKDOWN:
        text = path.read_text()
        new, stale = fill(text)
        used |= {m[2] for m in MARKER.finditer(text)}
        problems += [f"{path.relative_to(ROOT)}: table {name} differs from its records" for name in stale]
        if stale and not check:
            path.write_text(new)
    problems += [f"table {name} is in no Markdown file" for name in sorted(TABLES.keys() - used)]
    for problem in problems:
        print(problem if check else problem.replace("differs from its records", "rewritten"))
    return 1 if check and problems else 0


if __name__ == "__main__":
    sys.exit(main("--check" in sys.argv[1:]))
