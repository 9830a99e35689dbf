from screen import *
ds = sys.argv[1]; k = int(sys.argv[2]) if len(sys.argv) > 2 else 5
xtr, ytr, xte, yte = data(ds)
t = time.time()
net = conv_net(ds, 0, channels=128, kernel=k)
fte = feats(net, xte)
r = LDAReadout(2048, 10, 1e-4, "oas")
shifts = [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)]
for n, (dy, dx) in enumerate(shifts):
    xs = torch.roll(xtr, shifts=(dy, dx), dims=(2, 3))
    f = feats(net, xs)
    for i in range(0, len(f), 5000):
        r.accumulate(f[i:i+5000], ytr[i:i+5000])
    r.eval()
    acc = float((r(fte.double()).argmax(1) == yte).float().mean())
    print(ds, f"k{k} shifts={n+1}", f"{100*acc:.2f}", f"lam={r.shrinkage:.3g}", f"{time.time()-t:.0f}s", flush=True)
