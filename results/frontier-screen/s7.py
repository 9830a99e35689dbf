"""Learned features at 2048 (128 channels x 4^2), seed `seed`, against the same bank random, issue 18's
"HPCA whitening", "SoftHebb with whitening" and "learned features with corrected statistics":

- hpca: a Hebbian PCA rule (`hebbedge.fasthebb.hpca_fast`, Sanger's rule in FastHebb's form) learns the
  25 principal components of the 5 x 5 patches in one label-free epoch over the training images, and
  the variance along each (a running mean of a_q^2); whitening B^T (v + eps)^-1/2 B under the random
  bank, against the exact ZCA of the same patches;
- softhebb: the bank learns by SoftHebb (the block's own rule, rate 0.08) for one label-free epoch over
  the training images, i.i.d. or in the class-incremental stream's order (experience by experience,
  the stream's class order for this seed), on raw or whitened images (the ZCA's centre row as a fixed
  5 x 5 conv before the bank, ZCA with eps 0.1 in `softhebb`, the HPCA whitening in `softhebb-hpca`).
  The readout's sums are then taken over the final features of all training images: the best any
  correction of statistics stored while the features changed could do;
- whitening: the random bank under the exact ZCA and under the HPCA whitening (eps 0.1), for more seeds.

Usage: python s7.py DATASET [hpca|softhebb|softhebb-hpca|whitening] [seed]
"""
import torch.nn as nn
from screen import *
from hebbedge.fasthebb import hpca_fast
from hebbedge.nets import unsupervised_epoch
from scenarios.streams import default_class_order

ds, what = sys.argv[1], sys.argv[2]
seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
xtr, ytr, xte, yte = data(ds)
sub = xtr[torch.randperm(len(xtr), generator=torch.Generator().manual_seed(0))[:2000]]


def hpca_components(x, alpha=0.02, batch=64, ema=0.99):
    """One label-free epoch of Sanger's rule on the 5 x 5 patches of x: the learned components B [25, 25]
    (rows normalised) and the variance along each (a running mean of a_q^2)."""
    g = torch.Generator().manual_seed(seed)
    b = torch.randn(25, 25, generator=g) * 0.1
    mean, var = torch.zeros(25), torch.ones(25)
    for i, idx in enumerate(torch.randperm(len(x), generator=g).split(batch)):
        c = patches(x[idx])
        mean = c.mean(0) if i == 0 else ema * mean + (1 - ema) * c.mean(0)
        c = c - mean
        b += hpca_fast(c, b, alpha)
        var = ema * var + (1 - ema) * ((c @ b.T) ** 2).mean(0)
    return b / b.norm(dim=1, keepdim=True), var


def hpca_whitening(b, var, eps):
    """The whitening B^T (v + eps)^-1/2 B of the learned components."""
    return b.T @ torch.diag((var + eps) ** -0.5) @ b


def whiten_images(w):
    """A fixed 5 x 5 conv: each pixel replaced by the centre row of the patch whitening w."""
    conv = nn.Conv2d(1, 1, 5, padding=2, bias=False)
    conv.weight.data = w[12].reshape(1, 1, 5, 5).clone()
    return conv.requires_grad_(False)


def report(name, net, t, below=None):
    with torch.no_grad():
        ftr, fte = (feats(net, x if below is None else below(x)) for x in (xtr, xte))
    acc, lam = lda_acc(ftr, ytr, fte, yte, "oas")
    print(ds, f"seed{seed}", name, "oas", f"{100 * acc:.2f}", f"lam={lam:.3g}", f"{time.time() - t:.0f}s", flush=True)


def softhebb(order, below=None):
    """The 128-channel bank after one label-free SoftHebb epoch: i.i.d. ("iid") or experience by experience ("stream")."""
    net = conv_net(ds, seed, channels=128)
    g = torch.Generator().manual_seed(seed)
    x = xtr if below is None else below(xtr)
    if order == "iid":
        unsupervised_epoch(net, x, g, 64, progress=False)
    else:
        classes = default_class_order(seed)
        for k in range(5):
            unsupervised_epoch(net, x[torch.isin(ytr, torch.tensor(classes[2 * k:2 * k + 2]))], g, 64, progress=False)
    return net.eval()


if what == "hpca":
    t = time.time()
    b, var = hpca_components(xtr)
    p = patches(sub).double()
    e, u = torch.linalg.eigh(torch.cov(p.T))
    e, u = e.flip(0), u.flip(1)  # descending
    align = (b.double() @ u).abs().diagonal()
    print(ds, f"seed{seed}", "hpca |cos| with the eigenvectors, components 1-25:", " ".join(f"{a:.2f}" for a in align), flush=True)
    print(ds, f"seed{seed}", "hpca variances / eigenvalues:", " ".join(f"{v:.3g}/{l:.3g}" for v, l in zip(var, e)), flush=True)
    for eps in (0.1, 1.0):
        report(f"c128 hpca-whitened eps{eps}", whitened(conv_net(ds, seed, channels=128), hpca_whitening(b, var, eps)), t)
        report(f"c128 zca eps{eps}", whitened(conv_net(ds, seed, channels=128), zca(sub, 5, eps)), t)

if what == "whitening":  # (the same bank without whitening, same seed: s6.py's k5x128 rows)
    t = time.time()
    report("c128 hpca-whitened eps0.1", whitened(conv_net(ds, seed, channels=128), hpca_whitening(*hpca_components(xtr), 0.1)), t)
    report("c128 zca eps0.1", whitened(conv_net(ds, seed, channels=128), zca(sub, 5, 0.1)), t)

if what == "softhebb":
    t = time.time()
    report("c128 random", conv_net(ds, seed, channels=128), t)
    report("c128 softhebb iid", softhebb("iid"), t)
    report("c128 softhebb stream-order", softhebb("stream"), t)
    below = whiten_images(zca(sub, 5, 0.1))
    report("c128 random on zca-eps0.1 images", conv_net(ds, seed, channels=128), t, below)
    report("c128 softhebb iid on zca-eps0.1 images", softhebb("iid", below), t, below)

if what == "softhebb-hpca":
    t = time.time()
    below = whiten_images(hpca_whitening(*hpca_components(xtr), 0.1))
    report("c128 random on hpca-eps0.1 images", conv_net(ds, seed, channels=128), t, below)
    report("c128 softhebb iid on hpca-eps0.1 images", softhebb("iid", below), t, below)
