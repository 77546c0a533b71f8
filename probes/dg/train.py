"""Full-batch training of one DG algorithm over its hyper-parameter grid.

Every step sees the whole training split (one GEMM for the logits, group and domain risks by
``index_add``; no loop over samples), with Adam as in DomainBed. The network is a linear head
on the (frozen, normalised) features, or with ``adapter_dim`` a small adapter (linear + ReLU)
below it. IRM, V-REx and EQRM first train ``burnin`` steps without their penalty (DomainBed's
anneal: penalty weight 1 for IRM and V-REx, the mean domain risk for EQRM); that phase does
not depend on the grid value, so it runs once and each value continues from it with a fresh
Adam, exactly as separate runs would.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from featkit.errors import FeatkitError
from probes.dg import objectives
from probes.dg.defaults import (
    ALGORITHMS,
    BURNIN_ALGORITHMS,
    DG_BURNIN,
    DG_LR,
    DG_STEPS,
    DG_WEIGHT_DECAY,
    FEATURE_MATCHING,
    MMD_MAX_ROWS,
)


@dataclass(frozen=True)
class TrainData:
    """One training split on the device: normalised features ``x``, labels ``y``, GroupDRO's
    ``groups`` and the invariance terms' ``domains`` (ids into ``num_groups`` / ``num_domains``)."""

    x: torch.Tensor
    y: torch.Tensor
    groups: torch.Tensor
    domains: torch.Tensor
    num_classes: int
    num_groups: int
    num_domains: int


@dataclass(frozen=True)
class TrainOptions:
    """The optimisation shared by every algorithm."""

    steps: int = DG_STEPS
    lr: float = DG_LR
    weight_decay: float = DG_WEIGHT_DECAY
    burnin: int = DG_BURNIN
    adapter_dim: int | None = None
    mmd_max_rows: int = MMD_MAX_ROWS


class Network(torch.nn.Module):
    """``head(adapter(x))``: the linear head, on an optional ``Linear(dim, adapter_dim) + ReLU``."""

    def __init__(self, dim: int, num_classes: int, adapter_dim: int | None) -> None:
        super().__init__()
        self.adapter = (torch.nn.Sequential(torch.nn.Linear(dim, adapter_dim), torch.nn.ReLU())
                        if adapter_dim else None)
        self.head = torch.nn.Linear(adapter_dim or dim, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(representation the head reads, logits)``."""
        representation = x if self.adapter is None else self.adapter(x)
        return representation, self.head(representation)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_rows: int = 65536) -> torch.Tensor:
        """Predicted class ids (argmax of the logits; ties to the lower id)."""
        return torch.cat([self(x[i:i + batch_rows])[1].argmax(dim=1)
                          for i in range(0, len(x), batch_rows)]) if len(x) else \
            torch.zeros(0, dtype=torch.int64, device=x.device)


class _Objective:
    """One algorithm's loss at one grid value, with its state across steps (GroupDRO's q)."""

    def __init__(self, algorithm: str, value: float | None, data: TrainData,
                 options: TrainOptions, seed: int) -> None:
        self.algorithm, self.value, self.data, self.options = algorithm, value, data, options
        self.generator = torch.Generator(device=data.x.device)  # MMD's row draws
        self.generator.manual_seed(seed)
        present = torch.bincount(data.groups, minlength=data.num_groups) > 0
        self.present = present
        self.q = present.to(data.x.dtype) / present.sum()

    def __call__(self, representation: torch.Tensor, logits: torch.Tensor, step: int
                 ) -> torch.Tensor:
        data, algorithm = self.data, self.algorithm
        losses = F.cross_entropy(logits, data.y, reduction="none")
        if algorithm == "erm":
            return losses.mean()
        if algorithm == "groupdro":
            group_losses, _ = objectives.group_mean_losses(losses, data.groups, data.num_groups)
            self.q = objectives.groupdro_update(self.q, group_losses, float(self.value),
                                                self.present)
            return (self.q * group_losses).sum()
        risks, counts = objectives.group_mean_losses(losses, data.domains, data.num_domains)
        risks = risks[counts > 0]
        annealed = step >= self.options.burnin
        if algorithm == "vrex":
            weight = float(self.value) if annealed else 1.0
            return risks.mean() + weight * objectives.vrex_penalty(risks)
        if algorithm == "irm":
            weight = float(self.value) if annealed else 1.0
            return risks.mean() + weight * objectives.irm_penalty(logits, data.y, data.domains,
                                                                  data.num_domains)
        if algorithm == "eqrm":
            return objectives.kde_quantile(risks, float(self.value)) if annealed else risks.mean()
        if algorithm in FEATURE_MATCHING:
            if self.value is None:  # frozen features: the penalty has no gradient
                return risks.mean()
            return risks.mean() + float(self.value) * self._matching(representation)
        raise AssertionError(algorithm)

    def _matching(self, representation: torch.Tensor) -> torch.Tensor:
        data = self.data
        if self.algorithm == "coral":
            return objectives.coral_penalty(representation, data.domains, data.num_domains)
        rows = objectives.mmd_rows(data.domains, data.num_domains, self.options.mmd_max_rows,
                                   self.generator)
        if rows is None:
            return objectives.mmd_penalty(representation, data.domains, data.num_domains)
        return objectives.mmd_penalty(representation[rows], data.domains[rows], data.num_domains)


def _network(data: TrainData, options: TrainOptions, seed: int) -> Network:
    """A freshly initialised network (PyTorch's default init) from ``seed``, on the data's device,
    without touching the global random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = Network(data.x.shape[1], data.num_classes, options.adapter_dim)
    return network.to(device=data.x.device, dtype=data.x.dtype)


def _adam(network: Network, options: TrainOptions) -> torch.optim.Optimizer:
    return torch.optim.Adam(network.parameters(), lr=options.lr,
                            weight_decay=options.weight_decay)


def _run(network: Network, objective: _Objective, optimizer: torch.optim.Optimizer,
         steps: range) -> None:
    for step in steps:
        representation, logits = network(objective.data.x)
        loss = objective(representation, logits, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def train_algorithm(data: TrainData, algorithm: str, values: Sequence[float | None],
                    options: TrainOptions, seed: int) -> list[Network]:
    """One trained network per grid value (in order), all from the same initialisation
    (``seed``), each as a separate run would train it. For CORAL and MMD without an adapter
    pass ``values=[None]``: their penalty has no gradient there."""
    if algorithm not in ALGORITHMS:
        raise FeatkitError(f"unknown DG algorithm {algorithm!r} (known: {', '.join(ALGORITHMS)})")
    if algorithm not in BURNIN_ALGORITHMS:
        trained = []
        for value in values:
            network = _network(data, options, seed)
            _run(network, _Objective(algorithm, value, data, options, seed), _adam(network, options),
                 range(options.steps))
            trained.append(network)
        return trained
    burnin = min(options.burnin, options.steps)
    shared = _network(data, options, seed)
    _run(shared, _Objective(algorithm, values[0], data, options, seed), _adam(shared, options),
         range(burnin))
    trained = []
    for value in values:
        network = copy.deepcopy(shared) if len(values) > 1 else shared
        # Adam restarts when the penalty switches on, as in DomainBed
        _run(network, _Objective(algorithm, value, data, options, seed), _adam(network, options),
             range(burnin, options.steps))
        trained.append(network)
    return trained
