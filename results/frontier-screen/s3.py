from screen import *
import ast
ds = sys.argv[1]
xtr, ytr, xte, yte = data(ds)
for spec in sys.argv[2:]:
    ro = ast.literal_eval(spec)
    t = time.time()
    net = conv_net(ds, 0, **ro)
    ftr, fte = feats(net, xtr), feats(net, xte)
    for est in ("oas", "fixed"):
        acc, lam = lda_acc(ftr, ytr, fte, yte, est)
        print(ds, spec, est, f"{100*acc:.2f}", f"lam={lam:.3g}", f"{time.time()-t:.0f}s", flush=True)
