"""The semi-supervised protocol of Scalable bio-inspired training of Deep Neural Networks with FastHebb: Hebbian pre-training without labels, then a classifier
trained with labels on a fraction of the training set.

1. The hidden layers learn by their unsupervised rule (SWTA, HPCA, SoftHebb or WTA) for
   `pretrain_epochs` over all training images; labels are not used.
2. For each labelled fraction, a linear classifier on the frozen features is trained by backprop
   (Adam, cross-entropy) on that fraction, and tested on the test set.
The same classifier on the never-trained random features is the control.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from hebbedge.layers import HebbLayer
from hebbedge.models import thesis_linear
from hebbedge.nets import RULES, unsupervised_epoch, unsupervised_rule_


def features_net(rule: str, in_features: int, widths: tuple[int, ...], eta: float, radius: float = 3.0) -> nn.Sequential:
    """Hidden layers with an unsupervised rule (no readout: only the features are pre-trained)."""
    model = thesis_linear(in_features=in_features, widths=widths, n_classes=1)[:-1]  # drop the readout
    for layer in model:
        if isinstance(layer, HebbLayer):
            unsupervised_rule_(layer, rule, eta, radius)
    return model


def pretrain(model: nn.Sequential, x: torch.Tensor, epochs: int, batch_size: int, seed: int, progress: bool) -> None:
    """Unsupervised Hebbian learning over all of x."""
    g = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        unsupervised_epoch(model, x, g, batch_size, desc=f"pretrain {epoch + 1}/{epochs}", progress=progress)


@torch.no_grad()
def embed(model: nn.Sequential, x: torch.Tensor, batch_size: int = 2000, desc: str = "features", progress: bool = False) -> torch.Tensor:
    model.eval()
    starts = tqdm(range(0, len(x), batch_size), desc=desc, disable=not progress, leave=False)
    return torch.cat([model(x[i:i + batch_size]) for i in starts])


def linear_probe(train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor], epochs: int,
                 lr: float, seed: int, n_classes: int = 10, dropout: float = 0.0, halve_at: tuple[float, ...] = (),
                 curve: list[float] | None = None, progress: bool = False) -> float:
    """Test accuracy of a linear classifier trained by Adam on (features, labels), batch 64, with
    `dropout` on its input and its rate halved at each fraction `halve_at` of the epochs; `curve`,
    when given, receives the test accuracy after every epoch."""
    torch.manual_seed(seed)
    head = nn.Sequential(nn.Dropout(dropout), nn.Linear(train[0].shape[1], n_classes))
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.MultiStepLR(opt, [int(epochs * f) for f in halve_at], gamma=0.5)
    g = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def test_acc() -> float:
        head.eval()
        return (head(test[0]).argmax(1) == test[1]).float().mean().item()

    for _ in tqdm(range(epochs), desc="linear head", disable=not progress, leave=False):
        head.train()
        order = torch.randperm(len(train[0]), generator=g)
        for i in range(0, len(order), 64):
            idx = order[i:i + 64]
            loss = F.cross_entropy(head(train[0][idx]), train[1][idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        schedule.step()
        if curve is not None:
            curve.append(test_acc())
    return test_acc()


def run(rule: str, data: tuple[torch.Tensor, ...], fractions: tuple[float, ...], widths: tuple[int, ...] = (1000,),
        eta: float = 0.01, pretrain_epochs: int = 1, probe_epochs: int = 20, lr: float = 1e-2, seed: int = 0,
        progress: bool = True) -> dict:
    """Pre-train with `rule`, then probe each labelled fraction; the random-features net is probed alike."""
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; valid: {', '.join(RULES)}")
    if not fractions or any(not 0 < f <= 1 for f in fractions):
        raise ValueError(f"fractions must be in (0, 1], got {fractions}")
    x_train, y_train, x_test, y_test = (t.flatten(1) if t.dim() > 2 else t for t in data)
    torch.manual_seed(seed)
    random_net = features_net(rule, x_train.shape[1], widths, eta)
    hebbian_net = copy.deepcopy(random_net)  # same initial weights: the only difference is the pre-training
    pretrain(hebbian_net, x_train, pretrain_epochs, 64, seed, progress)
    order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(seed))
    rows = []
    for name, net in (("hebbian", hebbian_net), ("random", random_net)):
        f_train, f_test = embed(net, x_train), embed(net, x_test)
        for fraction in fractions:
            keep = order[:max(10, int(round(fraction * len(order))))]
            acc = linear_probe((f_train[keep], y_train[keep]), (f_test, y_test), probe_epochs, lr, seed)
            rows.append({"features": name, "fraction": fraction, "labelled": len(keep), "test_acc": acc})
    return {"rule": rule, "widths": list(widths), "eta": eta, "pretrain_epochs": pretrain_epochs,
            "probe_epochs": probe_epochs, "seed": seed, "results": rows}
