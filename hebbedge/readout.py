"""A readout that cannot forget: streaming linear discriminant analysis from Hebbian statistics.

The state is three sums over every sample seen: per-class counts n_c, per-class feature sums s_c,
and the second moment S = sum_i x_i x_i^T (a Hebbian outer product, one GEMM per batch). The
same samples in any order give the same state, so no ordering of the stream can make it forget.
Prediction solves the classifier from the sums (Hayes et al. 2020, deep SLDA), centred on the mean
m of everything seen (which changes every score by the same amount, so no prediction changes, and
keeps the scores small enough for reduced precision):

    mu_c = s_c / n_c,   Sigma = (S - sum_c n_c mu_c mu_c^T) / N   (the pooled within-class covariance)
    W_c = ((1 - lambda) Sigma + lambda I)^-1 (mu_c - m),   score_c(x) = (x - m) . W_c - (mu_c - m) . W_c / 2

Avalanche's ``StreamingLDA`` updates a running estimate of Sigma one sample at a time (a d x d
pass per sample); here Sigma is exact and a batch costs one GEMM. The sums are kept in float64,
where subtracting the class means from S loses nothing that matters: this module is the reference.

The edge keeps the same statistics in float32 in the form that stays accurate over long streams
(``merge``: counts, class means and the pooled within-class scatter, merged batch by batch the
Chan et al. way, so no large sum is ever subtracted from another), and solves the classifier with
``gauss_jordan_solve`` (the ONNX graph in hebbedge/export/graphs.py runs the same elimination).
"""

from __future__ import annotations

import torch
import torch.nn as nn


UNSEEN = -1e30  # the score of a class never seen (finite, so that a loss on it stays finite)


class LDAReadout(nn.Module):
    """Class means and a shared covariance, accumulated by ``accumulate``; solved when predicting.

    A class never seen scores UNSEEN (-1e30). The classifier is solved again on the first forward pass after
    new data, except in training mode, where the last solution is used (Avalanche computes training
    outputs for its loss and metrics, which an LDA does not need re-solved at every batch).
    """

    count: torch.Tensor
    total: torch.Tensor
    moment: torch.Tensor

    def __init__(self, n_features: int, n_classes: int, shrinkage: float = 1e-4, estimator: str = "fixed") -> None:
        super().__init__()
        if not 0.0 < shrinkage <= 1.0:
            raise ValueError(f"shrinkage must be in (0, 1], got {shrinkage}")
        check_estimator(estimator)
        # estimator "oas": `shrinkage` is estimated from the sums at each solve (``estimated_shrinkage``),
        # and holds the last estimate
        self.n_features, self.n_classes, self.shrinkage, self.estimator = n_features, n_classes, shrinkage, estimator
        self.register_buffer("count", torch.zeros(n_classes, dtype=torch.float64))
        self.register_buffer("total", torch.zeros(n_classes, n_features, dtype=torch.float64))
        self.register_buffer("moment", torch.zeros(n_features, n_features, dtype=torch.float64))
        self._solved: tuple[torch.Tensor, ...] | None = None
        self._solved_for: tuple[int, ...] = ()  # the sums' storage and versions when last solved

    @torch.no_grad()
    def accumulate(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add a batch of features x [B, d] with integer labels y [B] to the sums."""
        if x.dim() != 2 or x.shape[1] != self.n_features or x.shape[0] != y.shape[0]:
            raise ValueError(f"expected features [B, {self.n_features}] and B labels, got {tuple(x.shape)} and {tuple(y.shape)}")
        if y.min() < 0 or y.max() >= self.n_classes:
            raise ValueError(f"labels must be in [0, {self.n_classes}), got [{y.min()}, {y.max()}]")
        x64 = x.to(torch.float64)
        self.moment.addmm_(x64.T, x64)
        self.total.index_add_(0, y, x64)
        self.count.index_add_(0, y, torch.ones_like(y, dtype=torch.float64))

    def means(self) -> torch.Tensor:
        return self.total / self.count.clamp_min(1)[:, None]

    def covariance(self) -> torch.Tensor:
        """The pooled within-class covariance of everything seen (float64)."""
        return self.scatter() / self.count.sum().clamp_min(1)

    def scatter(self) -> torch.Tensor:
        """The pooled within-class scatter, N times the covariance (float64)."""
        return self.moment - self.total.T @ self.means()

    @torch.no_grad()
    def solve(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(weight [C, d], bias [C], centre [d]) of the centred linear classifier, in float64."""
        if self.estimator != "fixed" and self.count.sum() > 0:
            self.shrinkage = estimated_shrinkage(self.estimator, self.count, self.covariance(), self.shrinkage)
        return classifier(self.count, self.means(), self.scatter(), self.shrinkage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state = (self.moment.data_ptr(), self.moment._version, self.total._version, self.count._version)
        stale = state != self._solved_for
        if self._solved is None or self._solved[0].device != x.device or (stale and not self.training):
            self._solved, self._solved_for = self.solve(), state
        return scores(x.to(torch.float64), *self._solved).to(x.dtype)

    def extra_repr(self) -> str:
        return f"n_features={self.n_features}, n_classes={self.n_classes}, shrinkage={self.shrinkage}, estimator={self.estimator}"


def merge(features: torch.Tensor, one_hot: torch.Tensor, count: torch.Tensor, mean: torch.Tensor,
          scatter: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Add a batch (features [B, d], one-hot labels [B, C]) to (count [C], class means [C, d], pooled
    within-class scatter [d, d]); returns the new three.

    Chan, Golub & LeVeque's pairwise update, per class: the batch's own scatter about its class means,
    plus n_c m_c / (n_c + m_c) times the outer product of the difference of the means. Every term is a
    sum of squares of centred values, so float32 keeps its accuracy however long the stream.
    """
    m = one_hot.sum(0)
    batch_mean = (one_hot.T @ features) / m.clamp_min(1)[:, None]
    residual = features - one_hot @ batch_mean
    n = count + m
    delta = batch_mean - mean
    weight = (count * m / n.clamp_min(1))[:, None]
    scatter = scatter + residual.T @ residual + delta.T @ (weight * delta)
    return n, mean + (m / n.clamp_min(1))[:, None] * delta, scatter


def classifier(count: torch.Tensor, mean: torch.Tensor, scatter: torch.Tensor, shrinkage: float,
               solve=torch.linalg.solve) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(weight [C, d], bias [C], centre [d]) of the centred LDA classifier (module docstring), in the
    dtype of the state. A class never seen gets the bias UNSEEN."""
    n = count.sum().clamp_min(1)
    centre = (count @ mean) / n
    eye = torch.eye(len(scatter), dtype=scatter.dtype, device=scatter.device)
    lhs = (1 - shrinkage) * scatter / n + shrinkage * eye
    offset = mean - centre
    weight = solve(lhs, offset.T).T
    bias = -0.5 * (offset * weight).sum(1)
    return weight, bias.masked_fill(count == 0, UNSEEN), centre


def scores(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """Class scores of features x [B, d] under a centred classifier."""
    return (x - centre) @ weight.T + bias


def gauss_jordan_solve(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a^-1 b for a symmetric positive definite `a` [d, d] by Gauss-Jordan elimination without pivoting
    (stable for such matrices, like Cholesky): step k divides row k of [a | b] by its pivot and removes
    column k from every other row, one rank-1 update. After d steps the right block is the solution.
    The edge's ONNX refresh graph runs these same steps (a Scan over k), the one solve every runtime has."""
    m = torch.cat([a, b], 1)
    for k in range(len(a)):
        row = m[k] / m[k, k]
        col = m[:, k].clone()
        col[k] -= 1
        m = m - col[:, None] * row[None, :]
    return m[:, len(a):]


# --- shrinkage estimated from the sums (issue 18) --------------------------------------------------
# Both estimators shrink the covariance towards mu I, mu = trace(Sigma) / d:
#     Sigma_rho = (1 - rho) Sigma + rho mu I.
# ``classifier`` shrinks towards I instead; an LDA's predictions do not change when its covariance is
# scaled, so ``identity_shrinkage`` turns rho into the lambda of ``classifier`` that gives the same
# classifier up to a positive factor on every score.


def oas_shrinkage(n: float, covariance: torch.Tensor) -> float:
    """The Oracle Approximating Shrinkage rho (Chen et al. 2010, as sklearn.covariance.oas computes it)
    of a covariance estimated (divided by n, not n - 1) from n samples. Needs only n and the matrix,
    so the readout's order-invariant sums give it: no sample is stored."""
    d = covariance.shape[0]
    mu = torch.trace(covariance) / d
    alpha = (covariance ** 2).mean()
    num = alpha + mu ** 2
    den = (n + 1.0) * (alpha - mu ** 2 / d)
    return 1.0 if float(den) == 0.0 else float(torch.clamp(num / den, max=1.0))


def ledoit_wolf_shrinkage(n: float, covariance: torch.Tensor, fourth: float) -> float:
    """The Ledoit-Wolf rho (sklearn.covariance.ledoit_wolf_shrinkage, unblocked) of a covariance (divided
    by n) from n samples, given ``fourth`` = sum_i ||x_i - m||^4 over the same centred samples: a
    fourth-moment sum that the counts, means and second moment do not hold (a readout must keep it too)."""
    d = covariance.shape[0]
    mu = torch.trace(covariance) / d
    frob = (covariance ** 2).sum()
    beta = (fourth / n - frob) / (d * n)
    delta = (frob - 2.0 * mu * torch.trace(covariance) + d * mu ** 2) / d
    beta = torch.clamp(beta, max=delta)
    return 0.0 if float(beta) == 0.0 else float(beta / delta)


def identity_shrinkage(rho: float, covariance: torch.Tensor) -> float:
    """The lambda with (1 - lambda) Sigma + lambda I proportional to (1 - rho) Sigma + rho mu I
    (mu = trace(Sigma) / d): lambda = rho mu / (1 - rho + rho mu)."""
    mu = float(torch.trace(covariance)) / covariance.shape[0]
    return rho * mu / (1.0 - rho + rho * mu) if rho * mu > 0 else 0.0


ESTIMATORS = ("fixed", "oas")


def check_estimator(estimator: str) -> str:
    """`estimator` if it names one of ESTIMATORS; ValueError naming them otherwise."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"shrinkage estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
    return estimator


def estimated_shrinkage(estimator: str, count: torch.Tensor, covariance: torch.Tensor, fixed: float) -> float:
    """The ``classifier`` lambda for the pooled within-class covariance of N = count.sum() samples:
    `fixed` itself ("fixed"), or OAS's rho turned into lambda ("oas"), floored at 1e-12 so the system stays solvable."""
    if check_estimator(estimator) == "fixed":
        return fixed
    return min(1.0, max(1e-12, identity_shrinkage(oas_shrinkage(float(count.sum().clamp_min(1)), covariance), covariance)))
