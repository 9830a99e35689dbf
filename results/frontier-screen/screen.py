"""Screen feature mechanisms: features of all train/test images once, LDA fitted on all (= the
class-incremental final accuracy of the order-invariant readout), test accuracy. Seeded like a run."""
import os, sys, time, json, torch, numpy as np
from hebbedge.data import load_standardised
from hebbedge.config import with_overrides
from scenarios.configs import load_config
from hebbedge.nets import readout_features
from hebbedge.readout import LDAReadout
torch.set_num_threads(1)

def feats(net, x, bs=2000):
    with torch.no_grad():
        return torch.cat([net(x[i:i+bs]) for i in range(0, len(x), bs)])

def lda_acc(ftr, ytr, fte, yte, est="oas", shrink=1e-4):
    r = LDAReadout(ftr.shape[1], 10, shrink, est)
    for i in range(0, len(ftr), 5000):
        r.accumulate(ftr[i:i+5000], ytr[i:i+5000])
    r.eval()
    pred = r(fte.double()).argmax(1)
    return float((pred == yte).float().mean()), r.shrinkage

def conv_net(dataset, seed, **ro):
    scen = {"mnist": "split-mnist-from-fmnist", "fashion-mnist": "split-fmnist-from-mnist"}[dataset]
    cfg = with_overrides(load_config(scen), {"readout": ro} if ro else None)
    torch.manual_seed(seed)
    return readout_features(cfg, (1, 28, 28), 10)[0].eval()

def data(dataset):
    xtr, ytr = load_standardised(dataset, True, os.environ.get("HEBBEDGE_DATA"))
    xte, yte = load_standardised(dataset, False, os.environ.get("HEBBEDGE_DATA"))
    return xtr, ytr, xte, yte

def conv_configs(ds, named):
    """Each (name, [readout] overrides) of the random conv bank: accuracy with OAS and with the fixed lambda."""
    xtr, ytr, xte, yte = data(ds)
    for name, ro in named:
        t = time.time()
        net = conv_net(ds, 0, **ro)
        ftr, fte = feats(net, xtr), feats(net, xte)
        for est in ("oas", "fixed"):
            acc, lam = lda_acc(ftr, ytr, fte, yte, est)
            print(ds, name, est, f"{100*acc:.2f}", f"lam={lam:.3g}", f"{time.time()-t:.0f}s", flush=True)
