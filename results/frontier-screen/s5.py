"""Class-wise covariances (regularised QDA, Friedman 1989): Sigma_c(a) = a Sigma_c + (1 - a) Sigma_pooled, each
shrunk by OAS's lambda of the pooled one, on the 128-channel bank's 2048 features. Its state is a d x d
matrix per class (10 x 16.8 MB in float32), over issue 18's 17 MB budget: measured to see what the shared
covariance costs, not as a candidate."""
from screen import *
ds = sys.argv[1]
xtr, ytr, xte, yte = data(ds)
t = time.time()
net = conv_net(ds, 0, channels=128)
ftr, fte = feats(net, xtr), feats(net, xte)
lam = lda_acc(ftr, ytr, fte, yte, "oas")[1]  # OAS of the pooled within-class covariance, from the readout's sums
weights = (0.0, 0.1, 0.3, 0.5, 1.0)
for a, acc in zip(weights, classwise_accs(ftr, ytr, fte, yte, lam, weights)):
    print(ds, f"rda a={a}", f"{100*acc:.2f}", f"lam={lam:.3g}", f"{time.time()-t:.0f}s", flush=True)
