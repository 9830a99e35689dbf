"""Local learning rules: pure functions of tensors that give a layer's weight direction D.

D = -dL_local/dW is derived analytically (no autograd inside a rule), so a rule also runs under
``torch.no_grad()`` on a device with no optimizer at all, and traces to ONNX. Equation numbers refer
to the thesis *Backpropagation meets contrastive neuron-centric Hebbian learning*, chapter 4.

A rule object holds only hyperparameters, and takes and returns tensors (like torch.optim's
functional forms); it never sees a layer. Two kinds:

- a ``GradientRule`` gives dL/du at the layer's pre-activation u from the layer's output y; the
  layer turns it into D = -dL/dW its own way (``hebbedge.plasticity.linear_weight_grad`` /
  ``conv_weight_grad``), which lets a linear layer add the rank-B product into M without forming D;
- a ``PatchRule`` gives dW from the patches the layer sees and its weights W.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hebbedge.fasthebb import hpca_fast, swta_fast

EPS = 1e-8  # eq. 4.3


def activation_derivative(y: torch.Tensor, activation: str | None) -> torch.Tensor:
    """phi'(u) written in terms of the activation's output y = phi(u).

    tanh' = 1 - y^2 (thesis code erratum (a) applied tanh a second time); relu' = [y > 0].
    """
    if activation == "tanh":
        return (y * y).neg_().add_(1.0)
    if activation == "relu":
        return (y > 0).to(y.dtype)
    if activation is None:
        return torch.ones_like(y)
    raise ValueError(f"unknown activation {activation!r}; expected 'tanh', 'relu' or None")


def contrastive_masks(target: torch.Tensor, label_smoothing: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive and negative pair masks (eq. 4.5-4.6), smoothed as in eq. 4.26-4.27."""
    b = target.shape[0]
    same = target.unsqueeze(1) == target.unsqueeze(0)
    idx = torch.arange(b, device=target.device)
    off_diag = idx.unsqueeze(1) != idx.unsqueeze(0)  # (not a bool eye: ONNX Runtime has no bool EyeLike)
    m_pos = (same & off_diag).to(dtype)
    m_neg = (~same).to(dtype)
    if label_smoothing:
        # Thesis code erratum (b): its smoothing term sat on a separate line and was never added.
        share = label_smoothing / (b - 1)
        m_pos = ((1 - label_smoothing) * m_pos + share) * off_diag
        m_neg = ((1 - label_smoothing) * m_neg + share) * off_diag
    return m_pos, m_neg


def contrastive_loss(y: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """The local loss L = mean_{B x B}(M_pos * (1 - S) + M_neg * |S|) (eq. 4.7-4.9).

    Written with autograd-friendly ops; the tests differentiate it to check the analytic rule.
    """
    flat = y.flatten(1)
    yn = flat / (flat.norm(dim=1, keepdim=True) + EPS)
    s = yn @ yn.T - torch.eye(flat.shape[0], dtype=y.dtype, device=y.device)
    m_pos, m_neg = contrastive_masks(target, label_smoothing, y.dtype)
    return (m_pos * (1 - s) + m_neg * s.abs()).mean()


def contrastive_output_grad(
    y: torch.Tensor, target: torch.Tensor, activation: str | None, label_smoothing: float = 0.0
) -> torch.Tensor:
    """dL/du for the contrastive loss, u the layer's pre-activation, shaped like y.

    Chain S -> Yn -> Y -> u (eq. 4.10-4.20); the weight step (eq. 4.21-4.22) is layer-specific.
    Every step before the last is linear in Y from the left, so it is written with B x B matrices:
    the Gram matrix K = Y Y^T, then dL/dY = H Y for a B x B matrix H. Y is read by two small GEMMs
    and no other batch-sized tensor is formed on the way (the on-device step's peak memory is W + M
    plus a few batch-sized buffers).
    """
    b = y.shape[0]
    flat = y.flatten(1)
    gram = flat @ flat.T
    norm = (flat * flat).sum(1).sqrt()  # |Y_b| (the Gram matrix's diagonal; .diagonal() exports to ONNX as an If over CumSums)
    inv_denom = (norm + EPS).reciprocal()  # eq. 4.3
    s = gram * inv_denom[:, None] * inv_denom[None, :]  # S = Yn Yn^T
    m_pos, m_neg = contrastive_masks(target, label_smoothing, y.dtype)
    # eq. 4.13, divided by B^2 because the loss is a mean over the B x B matrix. The diagonal of
    # S - I is excluded by the masks, so S itself can be used here.
    g_s = (m_neg * s.sign() - m_pos) / (b * b)
    g_yn_of_y = (g_s + g_s.T) * inv_denom[None, :]  # eq. 4.14: dL/dYn = (g_S + g_S^T) Yn = this @ Y
    # eq. 4.19 with the epsilon of eq. 4.3 kept exact: d(Y/(|Y|+eps)) = g/(|Y|+eps) - Y (Y.g) / (|Y| (|Y|+eps)^2),
    # where g = dL/dYn and Y_b . g_b = sum_c (g_yn_of_y)_bc K_bc.
    row_dot = (g_yn_of_y * gram).sum(1)
    radial = row_dot * inv_denom * inv_denom / norm.clamp_min(torch.finfo(y.dtype).tiny)
    h = g_yn_of_y * inv_denom[:, None] - torch.eye(b, dtype=y.dtype, device=y.device) * radial[:, None]  # dL/dY = h @ Y
    g_y = h @ flat
    return g_y.view_as(y).mul_(activation_derivative(y, activation))  # eq. 4.20


def hebbian_descent_output_grad(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """dL/d(logits) of the mean cross-entropy: (softmax(XW^T) - T) / B (eq. 4.28-4.29)."""
    t = F.one_hot(target, logits.shape[1]).to(logits.dtype)
    return (logits.softmax(dim=1) - t) / logits.shape[0]


class Rule:
    """A local rule (hyperparameters only): see ``GradientRule`` and ``PatchRule``."""


class GradientRule(Rule):
    """A rule that is the negative gradient of a local loss on the layer's output."""

    def output_grad(self, out: torch.Tensor, target: torch.Tensor, activation: str | None) -> torch.Tensor:
        """dL/du at the pre-activation u, from the layer's output `out` and the labels."""
        raise NotImplementedError


class ContrastiveRule(GradientRule):
    """Contrastive rule for hidden layers (thesis 4.1), with optional label smoothing alpha (4.1.3).

    A batch of one has no pairs: its direction is zero rather than a division by B - 1 = 0.
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def output_grad(self, out: torch.Tensor, target: torch.Tensor, activation: str | None) -> torch.Tensor:
        if out.shape[0] < 2:
            return torch.zeros_like(out)
        return contrastive_output_grad(out, target, activation, self.label_smoothing)

    def __repr__(self) -> str:
        return f"ContrastiveRule(label_smoothing={self.label_smoothing})"


class HebbianDescent(GradientRule):
    """Hebbian descent for the output layer (thesis 4.1.4): D = (T - softmax(XW^T))^T X / B."""

    def output_grad(self, out: torch.Tensor, target: torch.Tensor, activation: str | None) -> torch.Tensor:
        if activation is not None:
            raise ValueError("HebbianDescent expects an output layer without activation (raw logits)")
        return hebbian_descent_output_grad(out, target)

    def __repr__(self) -> str:
        return "HebbianDescent()"


class PatchRule(Rule):
    """A rule on the patches a layer sees: a linear layer's inputs, or a conv layer's receptive fields
    (batch x positions, ``hebbedge.fasthebb.conv_patches``). ``update(c, w, target)`` gives dW for W
    flattened to [neurons, patch size]."""

    def update(self, c: torch.Tensor, w: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError


class SoftHebbRule(PatchRule):
    """SoftHebb (*Hebbian deep learning without feedback*, eq. 1-2): y = softmax(u / tau);
    dw_k = eta_k * mean_p y_k (x - u_k w_k).

    Soft anti-Hebbian: the update is negated for every neuron but the most active one (per patch).
    Per-neuron adaptive rate eta_k = (r_k - 1)^q, r_k = |w_k|: it vanishes as the weights reach
    the unit sphere (Section 3); the layer's eta multiplies it.

    `normalise` says how the batch's summed update is scaled before that rate: "mean" over its patches
    (eq. 2 averaged, the paper's text) or "max", divided by its largest absolute entry, as the authors'
    code does (a diagnostic of issue 21: docs/seeds.md section 4).
    """

    NORMALISE = ("mean", "max")

    def __init__(self, temperature: float = 1.0, q: float = 0.5, anti_hebbian: bool = True, normalise: str = "mean") -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if normalise not in self.NORMALISE:
            raise ValueError(f"unknown SoftHebb update normalisation {normalise!r}; expected one of {', '.join(self.NORMALISE)}")
        self.temperature, self.q, self.anti_hebbian, self.normalise = temperature, q, anti_hebbian, normalise

    def adaptive_rate(self, w: torch.Tensor) -> torch.Tensor:
        return (w.norm(dim=1) - 1).abs().pow(self.q)

    def update(self, c: torch.Tensor, w: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        u = c @ w.T  # [P, K]
        y = torch.softmax(u / self.temperature, dim=1)
        if self.anti_hebbian:
            winner = torch.nn.functional.one_hot(u.argmax(1), u.shape[1]).to(y.dtype)
            y = y * (2 * winner - 1)
        # sum_p y_k (x - u_k w_k) = (y^T C)_k - (sum_p y_k u_k) w_k
        dw = y.T @ c - (y * u).sum(0)[:, None] * w
        # Two returns, not one shared scaling: each keeps the operation order of the code that made the
        # recorded results (rate * (dw / P); (rate * dw) / max), so those records reproduce bit for bit.
        if self.normalise == "mean":
            return self.adaptive_rate(w)[:, None] * (dw / c.shape[0])
        return self.adaptive_rate(w)[:, None] * dw / (dw.abs().amax() + 1e-30)

    def __repr__(self) -> str:
        return (f"SoftHebbRule(temperature={self.temperature}, q={self.q}, anti_hebbian={self.anti_hebbian}, "
                f"normalise={self.normalise!r})")


class SWTARule(PatchRule):
    """Soft winner-take-all, FastHebb form (*Scalable bio-inspired training of deep neural networks
    with FastHebb*, SWTA-FH)."""

    def __init__(self, temperature: float = 1.0) -> None:
        self.temperature = temperature

    def update(self, c: torch.Tensor, w: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        return swta_fast(c, w, 1.0, self.temperature)

    def __repr__(self) -> str:
        return f"SWTARule(temperature={self.temperature})"


class HPCARule(PatchRule):
    """Hebbian PCA, FastHebb form (*Scalable bio-inspired training of deep neural networks with
    FastHebb*, HPCA-FH)."""

    def update(self, c: torch.Tensor, w: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        return hpca_fast(c, w, 1.0)

    def __repr__(self) -> str:
        return "HPCARule()"


def winner_update(c: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """dw_k = mean_p y_pk (c_p - w_k): each neuron moves towards the patches it is active on (y one-hot)."""
    return (y.T @ c - y.sum(0)[:, None] * w) / c.shape[0]


class WTARule(PatchRule):
    """Hard winner-take-all Hebbian rule (*Hebbian learning algorithms for training convolutional
    neural networks*): dw_k = y_k (x - w_k), y the one-hot winner; conv updates are averaged over
    patches."""

    def update(self, c: torch.Tensor, w: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        return winner_update(c, w, F.one_hot((c @ w.T).argmax(1), w.shape[0]).to(c.dtype))

    def __repr__(self) -> str:
        return "WTARule()"


class TeacherRule(PatchRule):
    """Supervised Hebbian classifier with a teacher neuron (*Hebbian learning algorithms for training
    convolutional neural networks*): the teacher makes the labelled class's neuron the active one,
    which moves towards its input, dw_t = x - w_t (averaged over the batch); the other output neurons
    do not change."""

    def update(self, c: torch.Tensor, w: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        return winner_update(c, w, F.one_hot(target, w.shape[0]).to(c.dtype))

    def __repr__(self) -> str:
        return "TeacherRule()"
