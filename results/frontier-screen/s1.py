from screen import *
import itertools
ds = sys.argv[1]
xtr, ytr, xte, yte = data(ds)
for name, ro in [("c128", dict(channels=128)), ("c128-k3", dict(channels=128, kernel=3)), ("c128-k7", dict(channels=128, kernel=7)),
                 ("c128-tri1", dict(channels=128, triangle=1.0)), ("c227-p3", dict(channels=227, pool=3))]:
    t = time.time()
    net = conv_net(ds, 0, **ro)
    ftr, fte = feats(net, xtr), feats(net, xte)
    for est in ("oas", "fixed"):
        acc, lam = lda_acc(ftr, ytr, fte, yte, est)
        print(ds, name, est, f"{100*acc:.2f}", f"lam={lam:.3g}", f"{time.time()-t:.0f}s", flush=True)
