"""A readout that cannot forget: streaming linear discriminant analysis from Hebbian statistics.

The state is three sums over every sample seen: per-class counts n_c, per-class feature sums s_c,
and the second moment S = sum_i x_i x_i^T (a Hebbian outer product, one GEMM per batch). The
same samples in any order give the same state, so no ordering of the stream can make it forget.
Prediction solves the classifier from the sums (Hayes et al. 2020, deep SLDA):

    mu_c = s_c / n_c,   Sigma = (S - sum_c n_c mu_c mu_c^T) / N   (the pooled within-class covariance)
    W = ((1 - lambda) Sigma + lambda I)^-1 [mu_1 ... mu_C],   score_c(x) = x . W_c - mu_c . W_c / 2

Avalanche's ``StreamingLDA`` updates a running estimate of Sigma one sample at a time (a d x d
pass per sample); here Sigma is exact and a batch costs one GEMM. The sums are kept in float64,
where subtracting the class means from S loses nothing that matters.
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

    def __init__(self, n_features: int, n_classes: int, shrinkage: float = 1e-4) -> None:
        super().__init__()
        if not 0.0 < shrinkage <= 1.0:
            raise ValueError(f"shrinkage must be in (0, 1], got {shrinkage}")
        self.n_features, self.n_classes, self.shrinkage = n_features, n_classes, shrinkage
        self.register_buffer("count", torch.zeros(n_classes, dtype=torch.float64))
        self.register_buffer("total", torch.zeros(n_classes, n_features, dtype=torch.float64))
        self.register_buffer("moment", torch.zeros(n_features, n_features, dtype=torch.float64))
        self._solved: tuple[torch.Tensor, torch.Tensor] | None = None
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
        n = self.count.sum().clamp_min(1)
        return (self.moment - self.total.T @ self.means()) / n

    @torch.no_grad()
    def solve(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W [d, C], bias [C]) of the linear classifier, in float64."""
        d = self.n_features
        precision_lhs = (1 - self.shrinkage) * self.covariance() + self.shrinkage * torch.eye(d, dtype=torch.float64, device=self.moment.device)
        mu = self.means()
        w = torch.linalg.solve(precision_lhs, mu.T)
        bias = -0.5 * (mu.T * w).sum(0)
        return w, bias.masked_fill(self.count == 0, UNSEEN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state = (self.moment.data_ptr(), self.moment._version, self.total._version, self.count._version)
        stale = state != self._solved_for
        if self._solved is None or self._solved[0].device != x.device or (stale and not self.training):
            self._solved, self._solved_for = self.solve(), state
        w, bias = self._solved
        return (x.to(torch.float64) @ w + bias).to(x.dtype)

    def extra_repr(self) -> str:
        return f"n_features={self.n_features}, n_classes={self.n_classes}, shrinkage={self.shrinkage}"
