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

def patches(x, k=5):
    """The k x k patches of images x (zero padding k // 2, as the bank's conv sees them): [N * H * W, k^2]."""
    return torch.nn.functional.unfold(x, k, padding=k // 2).transpose(1, 2).reshape(-1, k * k)

def zca(x, k, eps):
    """The ZCA whitening matrix U (E + eps)^-1/2 U^T of the k x k patches of x."""
    p = patches(x, k).double()
    p = p - p.mean(0)
    cov = p.T @ p / len(p)
    e, u = torch.linalg.eigh(cov)
    return (u @ torch.diag((e + eps) ** -0.5) @ u.T).float()

def whitened(net, w):
    """`net` whose first conv sees whitened patches: its filters multiplied by the whitening w."""
    conv = net[0]
    c = conv.weight.data
    conv.weight.data = (c.reshape(c.shape[0], -1) @ w).reshape(c.shape)
    return net

def classwise_accs(ftr, ytr, fte, yte, lam, weights):
    """Regularised QDA (Friedman 1989) in float64: Sigma_c(a) = a Sigma_c + (1 - a) Sigma_pooled, shrunk by
    lam towards I; the test accuracy for each a of `weights`."""
    ftr, fte = ftr.double(), fte.double()
    C, d = 10, ftr.shape[1]
    means = torch.stack([ftr[ytr == c].mean(0) for c in range(C)])
    counts = torch.tensor([float((ytr == c).sum()) for c in range(C)], dtype=torch.float64)
    covs = torch.stack([torch.cov(ftr[ytr == c].T, correction=0) for c in range(C)])
    pooled = (counts[:, None, None] * covs).sum(0) / counts.sum()
    eye = torch.eye(d, dtype=torch.float64)
    accs = []
    for a in weights:
        scores = []
        for c in range(C):
            L = torch.linalg.cholesky((1 - lam) * (a * covs[c] + (1 - a) * pooled) + lam * eye)
            z = torch.linalg.solve_triangular(L, (fte - means[c]).T, upper=False)
            scores.append(-0.5 * (z ** 2).sum(0) - torch.log(torch.diagonal(L)).sum() + torch.log(counts[c] / counts.sum()))
        accs.append(float((torch.stack(scores, 1).argmax(1) == yte).double().mean()))
    return accs

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
