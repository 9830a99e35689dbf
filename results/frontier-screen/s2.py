from screen import *
import torch.nn as nn
from hebbedge.nets import softhebb_block, Triangle
from hebbedge.models import AdaptiveAvgPool, MaxPool2d
ds = sys.argv[1]
xtr, ytr, xte, yte = data(ds)

def two_layer(c1, c2, k2=3, tri=0.7):
    torch.manual_seed(0)
    b1 = softhebb_block(1, c1, 5, "max", 1.0, 0.0, tri, 3.0, batchnorm=False)
    b2 = softhebb_block(c1, c2, k2, "max", 1.0, 0.0, tri, 3.0, batchnorm=False)
    return nn.Sequential(*b1, *b2, AdaptiveAvgPool(7, 4), nn.Flatten()).eval()

configs = []
sub = xtr[torch.randperm(len(xtr), generator=torch.Generator().manual_seed(0))[:2000]]
for eps in (1e-2, 1e-1):
    configs.append((f"c128-zca{eps}", lambda eps=eps: whitened(conv_net(ds, 0, channels=128), zca(sub, 5, eps))))
configs.append(("2layer-64-128", lambda: two_layer(64, 128)))
for name, make in configs:
    t = time.time()
    net = make()
    ftr, fte = feats(net, xtr), feats(net, xte)
    assert ftr.shape[1] <= 2048, ftr.shape
    acc, lam = lda_acc(ftr, ytr, fte, yte, "oas")
    print(ds, name, "oas", f"{100*acc:.2f}", f"lam={lam:.3g}", f"{time.time()-t:.0f}s", flush=True)
