"""The on-device learning cycle as pure functions, each exported to one ONNX graph.

A device runs three graphs and keeps one float32 state; it feeds tensors and saves the state, and
does no arithmetic of its own:

- ``predict``: (images, *state it reads) -> logits;
- ``learn``: (images, labels, *learned state) -> the new learned state;
- ``refresh`` (LDA readouts only): (count, mean, scatter) -> (weight, bias, centre), the classifier.

A frozen-C Hebbian network's state is its weights W_i and momentum buffers M_i; its learn graph is
`HebbianLearner.step` in frozen mode, written with the reference functions of
``hebbedge.plasticity`` (pending weight, commit, momentum update) and each layer's rule direction. Fixed
features under an LDA readout keep the readout's statistics in the float32 form of
``hebbedge.readout.merge`` and the centred classifier of ``hebbedge.readout.classifier``.
Images enter in [0, 1]; the standardisation is inside every graph. Both torch exporters silently
drop in-place updates (``W.copy_``), so every step is written as a function of its inputs.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
import torch.nn as nn
from onnx import TensorProto, helper

from hebbedge import plasticity
from hebbedge.layers import HebbLayer
from hebbedge.readout import UNSEEN, check_estimator, merge, scores

OPSET = 17


class Standardise(nn.Module):
    """Images in [0, 1] -> the standardised inputs the network was trained on."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std


class Predict(nn.Module):
    """A network whose weights do not change on the device: images -> logits."""

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.standardise, self.model = Standardise(mean, std), model.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self.standardise(images))


def hebbian_layers(model: nn.Module) -> list[HebbLayer]:
    layers = [m for m in model.modules() if isinstance(m, HebbLayer)]
    for layer in layers:
        if layer.bias is not None:
            raise ValueError("the exported learning step supports layers without bias (the thesis nets)")
    return layers


class HebbianPredict(nn.Module):
    """(images, W_1..W_n) -> logits: the network in eval mode with the weights it is given."""

    def __init__(self, model: nn.Sequential, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.standardise, self.model = Standardise(mean, std), model.eval()
        self.layers = hebbian_layers(model)

    def forward(self, images: torch.Tensor, *weights: torch.Tensor) -> torch.Tensor:
        h, i = self.standardise(images), 0
        for module in self.model:
            if isinstance(module, HebbLayer):
                h, i = module.respond(h, weights[i]), i + 1
            elif not isinstance(module, nn.Dropout):
                h = module(h)
        return h


class HebbianLearn(HebbianPredict):
    """(images, labels, W_1..W_n, M_1..M_n) -> (W_1'..W_n', M_1'..M_n'): one frozen-C learner step.

    Same order as `HebbianLearner.step` with C frozen: forward with W_eff = post(W + eta*C*M),
    commit W' = W_eff, then M' = beta*M + D with D from each layer's rule. Dropout is off.
    """

    def forward(self, images: torch.Tensor, labels: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n = len(self.layers)
        weights, momenta = state[:n], state[n:]
        h, seen = self.standardise(images), []
        for module in self.model:
            if isinstance(module, HebbLayer):
                w, m = weights[len(seen)], momenta[len(seen)]
                w_eff = module.pending(w, m) if module.learns else w  # plasticity.pending_weight
                y = module.respond(h, w_eff)
                seen.append((module, h, y, w_eff, m))
                h = y
            elif not isinstance(module, nn.Dropout):
                h = module(h)
        new_w, new_m = [], []
        for module, x, y, w_eff, m in seen:
            new_w.append(plasticity.commit(w_eff))
            if module.learns:
                d_w, _ = module.direction(x, y, labels)
                m = plasticity.momentum_update(m, d_w, module.beta)
            new_m.append(m)
        return (*new_w, *new_m)


class ReadoutPredict(nn.Module):
    """(images, weight, bias, centre) -> logits: fixed features, then the centred LDA classifier."""

    def __init__(self, features: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.standardise, self.features = Standardise(mean, std), features.eval()

    def forward(self, images: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
        return scores(self.features(self.standardise(images)), weight, bias, centre)


class ReadoutLearn(nn.Module):
    """(images, labels, count, mean, scatter) -> (count', mean', scatter'): ``hebbedge.readout.merge``
    of the batch's features, with the labels as a one-hot matrix (GEMMs instead of scatters)."""

    def __init__(self, features: nn.Module, n_classes: int, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.standardise, self.features, self.n_classes = Standardise(mean, std), features.eval(), n_classes

    def forward(self, images: torch.Tensor, labels: torch.Tensor, count: torch.Tensor, mean: torch.Tensor,
                scatter: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f = self.features(self.standardise(images))
        one_hot = (labels[:, None] == torch.arange(self.n_classes)[None]).to(f.dtype)
        return merge(f, one_hot, count, mean, scatter)


def _const(name: str, values, dtype: int = TensorProto.INT64, dims: list[int] | None = None) -> onnx.TensorProto:
    values = list(np.atleast_1d(values))
    return helper.make_tensor(name, dtype, [] if dims is None else dims, values)


BLOCK = 32  # columns eliminated per block step of the refresh's solve


def block_gauss_jordan_graph(size: int, block: int) -> onnx.GraphProto:
    """Gauss-Jordan by blocks of `block` columns, as a Scan body (M [size, size + C], E_K [size, block]) -> M', with
    E_K the identity's columns of block K (a Scan, not a Loop: tract runs Scan only; selections by
    matrix products, not by computed indices, so every shape inside is static). Block j's pivot block P = M[K, K] is inverted by `block` single steps of
    ``hebbedge.readout.gauss_jordan_solve`` on [P | I], unrolled (OpenVINO runs no Scan inside a Scan);
    then R = P^-1 M[K, :] and M' = M - (M[:, K] - E_K) R, which sets rows K to R and clears column block K
    elsewhere (E_K: the identity's columns K) with one GEMM, where single steps over M would be rank-1
    updates. P is a Schur complement of a symmetric positive definite matrix, so it is one too and
    needs no pivoting."""
    n = helper.make_node
    nodes = [
        n("Transpose", ["e_block"], ["e_block_t"], perm=[1, 0]), n("MatMul", ["e_block_t", "m"], ["block_rows"]),
        n("Slice", ["block_rows", "zero_1d", "size_1d", "one_1d"], ["block_rows_square"]),
        n("MatMul", ["block_rows_square", "e_block"], ["pivot_block"]),
        n("Concat", ["pivot_block", "eye"], ["small_0"], axis=1),
    ]
    init = [_const("zero_1d", [0], dims=[1]), _const("size_1d", [size], dims=[1]), _const("block_1d", [block], dims=[1]), _const("twice_1d", [2 * block], dims=[1]),
            _const("one_1d", [1], dims=[1]), _const("axis0", [0], dims=[1]),
            helper.make_tensor("eye", TensorProto.FLOAT, [block, block], np.eye(block, dtype=np.float32).ravel())]
    for k in range(block):  # row k / pivot; every other row minus its column-k entry times that row
        m, nxt = f"small_{k}", f"small_{k + 1}"
        init += [_const(f"k{k}", k), helper.make_tensor(f"e{k}", TensorProto.FLOAT, [block, 1], np.eye(block, dtype=np.float32)[:, k])]
        nodes += [n("Gather", [m, f"k{k}"], [f"row_k{k}"], axis=0), n("Gather", [f"row_k{k}", f"k{k}"], [f"pivot{k}"], axis=0),
                  n("Div", [f"row_k{k}", f"pivot{k}"], [f"row{k}"]), n("Unsqueeze", [f"row{k}", "axis0"], [f"row_2d{k}"]),
                  n("Gather", [m, f"k{k}"], [f"col_k{k}"], axis=1), n("Unsqueeze", [f"col_k{k}", "one_1d"], [f"col_2d{k}"]),
                  n("Sub", [f"col_2d{k}", f"e{k}"], [f"col{k}"]),
                  n("Mul", [f"col{k}", f"row_2d{k}"], [f"outer{k}"]), n("Sub", [m, f"outer{k}"], [nxt])]
    nodes += [
        n("Slice", [f"small_{block}", "block_1d", "twice_1d", "one_1d"], ["pivot_inverse"]),
        n("MatMul", ["pivot_inverse", "block_rows"], ["new_rows"]),
        n("Slice", ["m", "zero_1d", "size_1d", "one_1d"], ["m_square"]),
        n("MatMul", ["m_square", "e_block"], ["block_cols"]), n("Sub", ["block_cols", "e_block"], ["eliminate"]),
        n("MatMul", ["eliminate", "new_rows"], ["update"]), n("Sub", ["m", "update"], ["m_next"]),
    ]
    graph = helper.make_graph(
        nodes, "block_gauss_jordan_step",
        [helper.make_tensor_value_info("m", TensorProto.FLOAT, [None, None]),
         helper.make_tensor_value_info("e_block", TensorProto.FLOAT, [None, None])],
        [helper.make_tensor_value_info("m_next", TensorProto.FLOAT, [None, None])], initializer=init)
    # Names inside a subgraph must differ from the outer graph's.
    for item in (*graph.node, ):
        item.input[:] = [f"gj_{x}" for x in item.input]
        item.output[:] = [f"gj_{x}" for x in item.output]
    for item in (*graph.input, *graph.output, *graph.initializer):
        item.name = f"gj_{item.name}"
    return graph


def oas_nodes(n_features: int) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """covariance [d, d], samples -> shrinkage: ``hebbedge.readout.estimated_shrinkage("oas", ...)`` in
    float32 ONNX operators, so that the refresh re-estimates it from the learned state as the host does:
    rho = min(1, (alpha + mu^2) / ((n + 1)(alpha - mu^2 / d))) with mu = tr(Sigma) / d and alpha the mean
    of Sigma's squared entries (1 when the denominator is 0), then lambda = rho mu / (1 - rho + rho mu),
    clipped to [1e-12, 1]."""
    n, f = helper.make_node, TensorProto.FLOAT
    nodes = [
        n("EyeLike", ["covariance"], ["cov_eye"]), n("Mul", ["covariance", "cov_eye"], ["cov_diag"]),
        n("ReduceSum", ["cov_diag"], ["trace"], keepdims=0), n("Div", ["trace", "dim_f"], ["mu"]),
        n("Mul", ["covariance", "covariance"], ["cov_squared"]), n("ReduceMean", ["cov_squared"], ["alpha"], keepdims=0),
        n("Mul", ["mu", "mu"], ["mu_squared"]), n("Add", ["alpha", "mu_squared"], ["oas_num"]),
        n("Div", ["mu_squared", "dim_f"], ["mu_squared_d"]), n("Sub", ["alpha", "mu_squared_d"], ["spread"]),
        n("Add", ["samples", "one_f"], ["samples_1"]), n("Mul", ["samples_1", "spread"], ["oas_den"]),
        n("Max", ["oas_den", "tiny_f"], ["oas_den_safe"]), n("Div", ["oas_num", "oas_den_safe"], ["oas_ratio"]),
        n("Min", ["oas_ratio", "one_f"], ["rho_clipped"]), n("Greater", ["oas_den", "zero_f"], ["oas_defined"]),
        n("Where", ["oas_defined", "rho_clipped", "one_f"], ["rho"]),
        n("Mul", ["rho", "mu"], ["rho_mu"]), n("Sub", ["one_f", "rho"], ["one_minus_rho"]),
        n("Add", ["one_minus_rho", "rho_mu"], ["lambda_den"]), n("Max", ["lambda_den", "tiny_f"], ["lambda_den_safe"]),
        n("Div", ["rho_mu", "lambda_den_safe"], ["lambda_raw"]), n("Clip", ["lambda_raw", "floor_f", "one_f"], ["shrinkage"]),
    ]
    return nodes, [_const("dim_f", float(n_features), f), _const("tiny_f", 1e-30, f), _const("floor_f", 1e-12, f)]


def refresh_model(n_features: int, n_classes: int, shrinkage: float, block: int = BLOCK,
                  estimator: str = "fixed") -> onnx.ModelProto:
    """(count [C], mean [C, d], scatter [d, d]) -> (weight [C, d], bias [C], centre [d]):
    ``hebbedge.readout.classifier`` in float32 ONNX operators, its solve by blocks of Gauss-Jordan.
    The system is padded to a multiple of `block` with identity rows (their solution is 0).
    `estimator` "fixed": the readout's `shrinkage`; "oas": estimated from the state at every refresh (``oas_nodes``)."""
    check_estimator(estimator)
    n, f = helper.make_node, TensorProto.FLOAT
    padded = -(-n_features // block) * block
    pad = padded - n_features
    # The ridge of the padded system: the shrinkage on the real diagonal, 1 on the padding's.
    on_real = np.concatenate([np.ones(n_features, np.float32), np.zeros(pad, np.float32)])
    if estimator == "fixed":
        shrink_nodes, shrink_init = [], [_const("keep", 1.0 - shrinkage, f),
                                         helper.make_tensor("ridge", f, [padded], on_real * shrinkage + (1 - on_real))]
    else:
        shrink_nodes, shrink_init = oas_nodes(n_features)
        shrink_nodes += [n("Sub", ["one_f", "shrinkage"], ["keep"]), n("Mul", ["on_real", "shrinkage"], ["ridge_real"]),
                         n("Add", ["ridge_real", "on_pad"], ["ridge"])]
        shrink_init += [helper.make_tensor("on_real", f, [padded], on_real), helper.make_tensor("on_pad", f, [padded], 1 - on_real)]
    nodes = [
        n("ReduceSum", ["count"], ["total"], keepdims=0), n("Max", ["total", "one_f"], ["samples"]),
        n("Unsqueeze", ["count", "axis0"], ["count_row"]), n("MatMul", ["count_row", "mean"], ["count_mean"]),
        n("Div", ["count_mean", "samples"], ["centre_row"]), n("Squeeze", ["centre_row", "axis0"], ["centre"]),
        n("Div", ["scatter", "samples"], ["covariance"]), *shrink_nodes, n("Mul", ["covariance", "keep"], ["shrunk"]),
        n("Pad", ["shrunk", "pad_square"], ["shrunk_padded"]),
        n("EyeLike", ["shrunk_padded"], ["eye"]), n("Mul", ["eye", "ridge"], ["ridge_diag"]),
        n("Add", ["shrunk_padded", "ridge_diag"], ["lhs"]),
        n("Sub", ["mean", "centre_row"], ["offset"]), n("Transpose", ["offset"], ["rhs"], perm=[1, 0]),
        n("Pad", ["rhs", "pad_rows"], ["rhs_padded"]),
        n("Concat", ["lhs", "rhs_padded"], ["augmented"], axis=1),
        n("Reshape", ["eye", "eye_blocks_shape"], ["eye_blocks"]), n("Transpose", ["eye_blocks"], ["selectors"], perm=[1, 0, 2]),
        n("Scan", ["augmented", "selectors"], ["solved"], body=block_gauss_jordan_graph(padded, block), num_scan_inputs=1),
        n("Slice", ["solved", "solution_start", "solution_end", "axes01"], ["solution"]),
        n("Transpose", ["solution"], ["weight"], perm=[1, 0]),
        n("Mul", ["offset", "weight"], ["products"]), n("ReduceSum", ["products", "axis1"], ["quadratic"], keepdims=0),
        n("Mul", ["quadratic", "minus_half"], ["solved_bias"]),
        n("Greater", ["count", "zero_f"], ["seen"]), n("Where", ["seen", "solved_bias", "unseen"], ["bias"]),
    ]
    init = [
        _const("eye_blocks_shape", [padded, padded // block, block], dims=[3]),
        _const("pad_square", [0, 0, pad, pad], dims=[4]), _const("pad_rows", [0, 0, pad, 0], dims=[4]),
        _const("solution_start", [0, padded], dims=[2]), _const("solution_end", [n_features, padded + n_classes], dims=[2]),
        _const("axes01", [0, 1], dims=[2]), _const("axis0", [0], dims=[1]), _const("axis1", [1], dims=[1]),
        _const("one_f", 1.0, f), _const("zero_f", 0.0, f), _const("minus_half", -0.5, f), _const("unseen", UNSEEN, f),
        *shrink_init,
    ]
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes, "refresh",
        [vi("count", f, [n_classes]), vi("mean", f, [n_classes, n_features]), vi("scatter", f, [n_features, n_features])],
        [vi("weight", f, [n_classes, n_features]), vi("bias", f, [n_classes]), vi("centre", f, [n_features])], initializer=init)
    # IR 8, as torch's exporter writes: onnx's default (newer) is refused by older runtimes (onnxruntime-node 1.30).
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="hebbedge", ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model
