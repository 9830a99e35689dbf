"""Class-wise covariances (regularised QDA, Friedman 1989): Sigma_c(a) = a Sigma_c + (1 - a) Sigma_pooled, each
shrunk by OAS's lambda of the pooled one, on the 128-channel bank's 2048 features. Its state is a d x d
matrix per class (10 x 16.8 MB in float32), over issue 18's 17 MB budget: measured to see what the shared
covariance costs, not as a candidate."""
from screen import *
from hebbedge.readout import estimated_shrinkage
ds = sys.argv[1]
xtr, ytr, xte, yte = data(ds)
t = time.time()
net = conv_net(ds, 0, channels=128)
ftr, fte = feats(net, xtr).double(), feats(net, xte).double()
C, d = 10, ftr.shape[1]
means = torch.stack([ftr[ytr == c].mean(0) for c in range(C)])
counts = torch.tensor([float((ytr == c).sum()) for c in range(C)])
covs = torch.stack([torch.cov(ftr[ytr == c].T, correction=0) for c in range(C)])
pooled = (counts[:, None, None] * covs).sum(0) / counts.sum()
lam = estimated_shrinkage("oas", counts, pooled, 1e-4)
eye = torch.eye(d, dtype=torch.float64)
for a in (0.0, 0.1, 0.3, 0.5, 1.0):
    scores = []
    for c in range(C):
        cov = (1 - lam) * (a * covs[c] + (1 - a) * pooled) + lam * eye
        L = torch.linalg.cholesky(cov)
        z = torch.linalg.solve_triangular(L, (fte - means[c]).T, upper=False)
        scores.append(-0.5 * (z ** 2).sum(0) - torch.log(torch.diagonal(L)).sum() + torch.log(counts[c] / counts.sum()))
    acc = float((torch.stack(scores, 1).argmax(1) == yte).double().mean())
    print(ds, f"rda a={a}", f"{100*acc:.2f}", f"lam={lam:.3g}", f"{time.time()-t:.0f}s", flush=True)
