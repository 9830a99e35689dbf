"""FastHebb (seed 001): soft-WTA and Hebbian-PCA updates as matrix products, and their per-patch references.

Notation of the paper: a layer sees P patches (batch x positions for a conv layer, the batch for a
linear layer) C[p, m], has Q neurons with weights B[q, m] and activations A[p, q] = C B^T.

- SWTA (eq. 2-3): per patch, dB_q = alpha s_q (c - b_q) with s = softmax(a / T); the per-patch
  updates are aggregated with weights D[p, q] = s[p, q] / sum_p s[p, q].
- HPCA (eq. 4): per patch, dB_q = alpha a_q (c - sum_{k <= q} a_k b_k); aggregated by averaging.

The fast forms contract the patch index early (Section 3.3) and never build the P x Q x M tensor of
per-patch updates. They are algebraically identical to the per-patch loops, which the tests check.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def swta_fast(c: torch.Tensor, b: torch.Tensor, alpha: float, temperature: float) -> torch.Tensor:
    """dB = alpha (bmm((DS)^T, C) - E * B), E[q] = sum_p (DS)[p, q] (Section 3.3, SWTA-FH)."""
    s = torch.softmax(c @ b.T / temperature, dim=1)  # [P, Q]
    ds = s * s / s.sum(0, keepdim=True)  # D * S
    return alpha * (ds.T @ c - ds.sum(0)[:, None] * b)


def hpca_fast(c: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """dB = alpha / P (A^T C - G B), G = (A^T A) masked to q' <= q (Section 3.3, HPCA-FH)."""
    a = c @ b.T  # [P, Q]
    g = torch.tril(a.T @ a)
    return alpha / c.shape[0] * (a.T @ c - g @ b)


def swta_reference(c: torch.Tensor, b: torch.Tensor, alpha: float, temperature: float) -> torch.Tensor:
    """Eq. 2-3 patch by patch, then the weighted aggregation: the straightforward form."""
    s_all = torch.stack([torch.softmax(b @ c_p / temperature, dim=0) for c_p in c])  # [P, Q]
    weights = s_all / s_all.sum(0, keepdim=True)
    total = torch.zeros_like(b)
    for c_p, s_p, w_p in zip(c, s_all, weights):
        total += w_p[:, None] * (alpha * s_p[:, None] * (c_p[None, :] - b))
    return total


def hpca_reference(c: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """Eq. 4 patch by patch and neuron by neuron, then the average."""
    total = torch.zeros_like(b)
    for c_p in c:
        a = b @ c_p
        for q in range(b.shape[0]):
            total[q] += alpha * a[q] * (c_p - (a[: q + 1, None] * b[: q + 1]).sum(0))
    return total / c.shape[0]


def conv_patches(x: torch.Tensor, kernel_size, stride=1, padding=0, dilation=1) -> torch.Tensor:
    """C[p, m]: every receptive field of a conv layer as a row, p over batch x positions."""
    cols = F.unfold(x, kernel_size, dilation, padding, stride)  # [B, M, L]
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def conv_patches_reference(x: torch.Tensor, kernel_size: int, stride: int = 1, padding: int = 0) -> torch.Tensor:
    """The same patches cut out one by one (square kernel, no dilation), for the tests."""
    xp = F.pad(x, (padding,) * 4)
    rows = []
    for img in xp:
        for i in range(0, xp.shape[2] - kernel_size + 1, stride):
            for j in range(0, xp.shape[3] - kernel_size + 1, stride):
                rows.append(img[:, i:i + kernel_size, j:j + kernel_size].reshape(-1))
    return torch.stack(rows)
