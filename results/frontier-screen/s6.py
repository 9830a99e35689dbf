"""The mechanisms issue 18 lists that s1-s5 left out, at 2048 features, seed `seed` (default 0):

- multi-scale: random banks of several kernel sizes, concatenated (channels split so that the total
  stays 128 x 4^2 = 2048), each size drawn from its own seed;
- ledoit-wolf: the shrinkage estimated by Ledoit-Wolf (`hebbedge.readout.ledoit_wolf_shrinkage`, which
  needs the fourth-moment sum sum_i ||x_i - m_c||^4 that a streaming readout does not keep; here it is
  computed from the class-centred features of all training images) against OAS, on the 128-channel bank;
- kernels: the candidates of multi-scale worth more seeds (the single kernel 5 and 7 banks, four sizes);
- pair: the kernel 5 bank and the four sizes alone (the seeds after the first two on MNIST);
- ranpac: the 16-channel bank alone and with the RanPAC-style random ReLU expansion to 2048 (the
  `[readout] expand` of the learners), for more seeds;
- readout: on the 128-channel bank's features, the readouts of the ablation table side by side (OAS,
  the fixed lambda 1e-4, Ledoit-Wolf, class-wise covariances with weight 0.1 as in s5.py), for more seeds.

Usage: python s6.py DATASET [multi-scale|kernels|pair|ranpac|ledoit-wolf|readout] [seed]
"""
from screen import *
from hebbedge.readout import identity_shrinkage, ledoit_wolf_shrinkage

ds, what = sys.argv[1], sys.argv[2]
seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
xtr, ytr, xte, yte = data(ds)


def bank(kernels_channels):
    """Features of random banks, one per (kernel, channels), concatenated: [N, sum(channels) * 16]."""
    nets = [conv_net(ds, seed + 1000 * i, channels=c, kernel=k) for i, (k, c) in enumerate(kernels_channels)]
    return (torch.cat([feats(n, x) for n in nets], 1) for x in (xtr, xte))


BANKS = {"multi-scale": ([(5, 128)], [(3, 43), (5, 43), (7, 42)], [(5, 64), (7, 64)], [(3, 32), (5, 32), (7, 32), (9, 32)],
                         [(7, 64), (9, 64)]),
         "kernels": ([(5, 128)], [(7, 128)], [(3, 32), (5, 32), (7, 32), (9, 32)]),
         "pair": ([(5, 128)], [(3, 32), (5, 32), (7, 32), (9, 32)])}
if what == "ranpac":
    for name, ro in (("c16", dict(channels=16)), ("c16-ranpac2048", dict(channels=16, expand=2048))):
        t = time.time()
        net = conv_net(ds, seed, **ro)
        acc, lam = lda_acc(feats(net, xtr), ytr, feats(net, xte), yte, "fixed")
        print(ds, f"seed{seed}", name, "fixed", f"{100 * acc:.2f}", f"lam={lam:.3g}", f"{time.time() - t:.0f}s", flush=True)

if what in BANKS:
    for kc in BANKS[what]:
        t = time.time()
        ftr, fte = bank(kc)
        assert ftr.shape[1] == 2048, ftr.shape
        acc, lam = lda_acc(ftr, ytr, fte, yte, "oas")
        name = "+".join(f"k{k}x{c}" for k, c in kc)
        print(ds, f"seed{seed}", name, "oas", f"{100 * acc:.2f}", f"lam={lam:.3g}", f"{time.time() - t:.0f}s", flush=True)


def ledoit_wolf_shrinkage_of(ftr):
    """The readout's lambda from the Ledoit-Wolf shrinkage of the class-centred training features."""
    means = torch.stack([ftr[ytr == c].mean(0) for c in range(10)])
    centred = ftr - means[ytr]
    cov = centred.T @ centred / len(ftr)
    return identity_shrinkage(ledoit_wolf_shrinkage(len(ftr), cov, float(((centred ** 2).sum(1) ** 2).sum())), cov)


if what in ("ledoit-wolf", "readout"):
    t = time.time()
    ftr, fte = bank([(5, 128)])
    ftr, fte = ftr.double(), fte.double()
    acc, lam = lda_acc(ftr, ytr, fte, yte, "fixed", ledoit_wolf_shrinkage_of(ftr))
    print(ds, f"seed{seed}", "c128 ledoit-wolf", f"{100 * acc:.2f}", f"lam={lam:.3g}", f"{time.time() - t:.0f}s", flush=True)
    lams = {}
    for est in ("oas", "fixed") if what == "readout" else ("oas",):
        acc, lams[est] = lda_acc(ftr.float(), ytr, fte, yte, est)
        print(ds, f"seed{seed}", f"c128 {est}", f"{100 * acc:.2f}", f"lam={lams[est]:.3g}", f"{time.time() - t:.0f}s", flush=True)
    if what == "readout":
        acc = classwise_accs(ftr, ytr, fte, yte, lams["oas"], (0.1,))[0]
        print(ds, f"seed{seed}", "c128 rda a=0.1", f"{100 * acc:.2f}", f"{time.time() - t:.0f}s", flush=True)
