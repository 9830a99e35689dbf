"""FastHebb (*Scalable bio-inspired training of deep neural networks with FastHebb*): soft-WTA and
Hebbian-PCA updates as matrix products, and their per-patch references.

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


def swta_two_phase(c: torch.Tensor, b: torch.Tensor, alpha: float, temperature: float, chunk: int = 2048) -> torch.Tensor:
    """The per-patch rule as non-FastHebb code runs it: every patch's update dB[p, q, m] is built,
    then aggregated (Fig. 1a). Vectorised over chunks of patches; the speed baseline."""
    s = torch.softmax(c @ b.T / temperature, dim=1)
    weights = s / s.sum(0, keepdim=True)
    total = torch.zeros_like(b)
    for i in range(0, c.shape[0], chunk):
        s_p, w_p, c_p = s[i:i + chunk], weights[i:i + chunk], c[i:i + chunk]
        updates = alpha * s_p[:, :, None] * (c_p[:, None, :] - b[None])  # [p, Q, M]
        total += (w_p[:, :, None] * updates).sum(0)
    return total


def hpca_two_phase(c: torch.Tensor, b: torch.Tensor, alpha: float, chunk: int = 2048) -> torch.Tensor:
    """Eq. 4 for every patch as a [p, Q, M] tensor (cumulative reconstruction), then the average."""
    total = torch.zeros_like(b)
    for i in range(0, c.shape[0], chunk):
        c_p = c[i:i + chunk]
        a = c_p @ b.T  # [p, Q]
        recon = torch.cumsum(a[:, :, None] * b[None], dim=1)  # sum_{k <= q} a_k b_k
        total += (alpha * a[:, :, None] * (c_p[:, None, :] - recon)).sum(0)
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


def benchmark(batches: int = 5, batch_size: int = 32, epoch_images: int = 50_000, seed: int = 0) -> dict:
    """The FastHebb paper's single-layer setting: 5x5 conv, 3 -> 96 channels, 32x32 inputs (CIFAR-10 sized).

    Times one weight update per batch (patch extraction + rule) for the two-phase per-patch rule
    and the FastHebb form, on the same random batches, and extrapolates to an epoch of
    `epoch_images` images. The update's cost does not depend on the pixel values.
    """
    import time

    g = torch.Generator().manual_seed(seed)
    b = torch.randn(96, 3 * 5 * 5, generator=g) * 0.1
    xs = [torch.rand(batch_size, 3, 32, 32, generator=g) for _ in range(batches)]
    rules = {
        "swta": (lambda c: swta_two_phase(c, b, 1e-3, 50.0), lambda c: swta_fast(c, b, 1e-3, 50.0)),
        "hpca": (lambda c: hpca_two_phase(c, b, 1e-3), lambda c: hpca_fast(c, b, 1e-3)),
    }
    out = {"setting": "5x5 conv, 3 -> 96 channels, 32x32 inputs", "batch_size": batch_size, "batches_timed": batches,
           "epoch_images": epoch_images, "threads": torch.get_num_threads(), "rules": {}}
    for name, (slow, fast) in rules.items():
        row = {}
        for label, rule in (("per_patch", slow), ("fasthebb", fast)):
            rule(conv_patches(xs[0], 5))  # warm-up
            start = time.perf_counter()
            for x in xs:
                rule(conv_patches(x, 5))
            per_batch = (time.perf_counter() - start) / batches
            row[f"{label}_epoch_seconds"] = per_batch * epoch_images / batch_size
        row["speedup"] = row["per_patch_epoch_seconds"] / row["fasthebb_epoch_seconds"]
        out["rules"][name] = row
    return out
