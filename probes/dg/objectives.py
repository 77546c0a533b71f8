"""The DG algorithms' terms as pure torch functions of one full batch.

Each follows DomainBed's implementation (``domainbed/algorithms.py``), written for a full batch
with integer group or domain ids instead of one minibatch per domain, so no Python loop runs over
samples:

- GroupDRO (Sagawa et al. 2020): ``q_g <- q_g * exp(eta * L_g)``, ``q <- q / sum(q)``, loss
  ``sum_g q_g L_g``;
- V-REx (Krueger et al. 2021): ``mean_e R_e + lambda * mean_e (R_e - mean R)^2``;
- IRMv1 (Arjovsky et al. 2019): ``mean_e R_e + lambda * mean_e (d/ds R_e(s * logits) at s=1)^2``,
  the derivative written out: ``mean_{i in e} (p_i . z_i - z_{i, y_i})``;
- EQRM (Eastwood et al. 2022): the ``alpha``-quantile of the domain risks under a Gaussian kernel
  density estimate (Gauss-optimal bandwidth), differentiated through the implicit function;
- CORAL (Sun & Saenko 2016) and MMD (Li et al. 2018): the mean over domain pairs of the
  mean/covariance distance, or of the Gaussian-kernel MMD, of the representation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from probes.dg.defaults import MMD_GAMMAS


def group_mean_losses(losses: torch.Tensor, groups: torch.Tensor, num_groups: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean loss of each group, rows per group)``; a group without rows has mean 0."""
    sums = torch.zeros(num_groups, dtype=losses.dtype, device=losses.device)
    sums = sums.index_add(0, groups, losses)
    counts = torch.bincount(groups, minlength=num_groups).to(losses.dtype)
    return sums / counts.clamp_min(1), counts


def groupdro_update(q: torch.Tensor, group_losses: torch.Tensor, eta: float,
                    present: torch.Tensor | None = None) -> torch.Tensor:
    """GroupDRO's exponentiated-gradient step on the group weights: ``q * exp(eta * L)``,
    renormalised to sum 1. Groups not ``present`` (no training rows) keep weight 0."""
    q = q * torch.exp(eta * group_losses.detach())
    if present is not None:
        q = torch.where(present, q, torch.zeros_like(q))
    return q / q.sum()


def vrex_penalty(domain_risks: torch.Tensor) -> torch.Tensor:
    """V-REx's penalty: the variance (biased, as DomainBed) of the domain risks."""
    return ((domain_risks - domain_risks.mean()) ** 2).mean()


def irm_penalty(logits: torch.Tensor, labels: torch.Tensor, domains: torch.Tensor,
                num_domains: int) -> torch.Tensor:
    """IRMv1's penalty, averaged over domains: the squared derivative of each domain's mean
    cross-entropy with respect to a scale ``s`` on the logits, at ``s = 1``. That derivative is
    the domain's mean of ``softmax(z_i) . z_i - z_{i, y_i}``, so no second autograd pass runs."""
    probabilities = torch.softmax(logits, dim=1)
    per_row = (probabilities * logits).sum(dim=1) - logits.gather(1, labels[:, None])[:, 0]
    grads, counts = group_mean_losses(per_row, domains, num_domains)
    present = counts > 0
    return (grads[present] ** 2).mean()


def kde_quantile(values: torch.Tensor, alpha: float, *, iterations: int = 60) -> torch.Tensor:
    """The ``alpha``-quantile of a Gaussian kernel density estimate of ``values`` (EQRM's risk
    quantile), with the Gauss-optimal bandwidth ``(4 / 3n)^(1/5) * std``. The quantile ``t``
    solves ``mean_i Phi((t - v_i) / h) = alpha`` (bisection, no graph); its gradient is the
    implicit one, ``dt/dv_i = phi_i / sum_j phi_j`` (bandwidth held fixed). Values that do not
    spread (one domain, or equal risks) give their mean."""
    n = values.numel()
    std = values.detach().std() if n > 1 else torch.zeros((), dtype=values.dtype)
    if n < 2 or not float(std) > 0:  # one host round trip per call
        return values.mean()
    h = std.double() * (4.0 / (3.0 * n)) ** 0.2
    v = values.detach().double()
    lo, hi = v.min() - 10 * h, v.max() + 10 * h
    for _ in range(iterations):  # on tensors: no host round trip per iteration
        mid = 0.5 * (lo + hi)
        below = torch.special.ndtr((mid - v) / h).mean() < alpha
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    t = 0.5 * (lo + hi)
    density = torch.exp(-0.5 * ((t - v) / h) ** 2)
    weights = (density / density.sum()).to(values.dtype)
    return t.to(values.dtype) + (weights * (values - values.detach())).sum()


def _domain_index(domains: torch.Tensor, num_domains: int, min_rows: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """One-hot domain membership (``n x D``) of the domains with at least ``min_rows`` rows,
    and their row counts."""
    onehot = F.one_hot(domains, num_domains).to(torch.float32)
    counts = onehot.sum(dim=0)
    keep = counts >= min_rows
    return onehot[:, keep], counts[keep]


def _mean_pairwise_sq_distance(items: torch.Tensor) -> torch.Tensor:
    """Mean over pairs i < j of ``mean((a_i - a_j)^2)`` for the rows ``a_i`` of ``items``
    (``D x m``), in O(D m): ``sum_{i<j} |a_i - a_j|^2 = D sum_i |a_i|^2 - |sum_i a_i|^2``."""
    d = items.shape[0]
    total = d * (items ** 2).sum() - (items.sum(dim=0) ** 2).sum()
    return total / (d * (d - 1) / 2) / items.shape[1]


def coral_penalty(features: torch.Tensor, domains: torch.Tensor, num_domains: int
                  ) -> torch.Tensor:
    """CORAL's penalty (DomainBed's ``mean_cov`` MMD): the mean over domain pairs of
    ``mean((mu_i - mu_j)^2) + mean((C_i - C_j)^2)``, ``C`` the unbiased covariance. Domains with
    fewer than two rows are left out; fewer than two domains give 0."""
    onehot, counts = _domain_index(domains, num_domains, 2)
    if counts.numel() < 2:
        return features.sum() * 0.0
    x = features.to(torch.float32)
    means = (onehot.T @ x) / counts[:, None]
    centred = x - onehot @ means
    covariances = torch.stack([
        (centred * onehot[:, k:k + 1]).T @ centred / (counts[k] - 1)
        for k in range(counts.numel())
    ])
    return (_mean_pairwise_sq_distance(means)
            + _mean_pairwise_sq_distance(covariances.reshape(counts.numel(), -1)))


def gaussian_kernel(x: torch.Tensor, y: torch.Tensor, gammas: Sequence[float] = MMD_GAMMAS
                    ) -> torch.Tensor:
    """DomainBed's MMD kernel: ``sum_gamma exp(-gamma |x - y|^2)`` (squared distances clamped
    at 1e-30 as there)."""
    distances = (x.pow(2).sum(1, keepdim=True) - 2 * x @ y.T
                 + y.pow(2).sum(1)[None, :]).clamp_min(1e-30)
    return sum(torch.exp(-g * distances) for g in gammas)


def mmd_penalty(features: torch.Tensor, domains: torch.Tensor, num_domains: int,
                gammas: Sequence[float] = MMD_GAMMAS) -> torch.Tensor:
    """MMD's penalty: the mean over domain pairs of ``mean K_ii + mean K_jj - 2 mean K_ij``
    with :func:`gaussian_kernel`; in one kernel matrix, with ``M`` the domains' mean kernel
    values, the pair sum is ``D tr(M) - sum(M)``. Fewer than two domains give 0."""
    onehot, counts = _domain_index(domains, num_domains, 1)
    d = counts.numel()
    if d < 2:
        return features.sum() * 0.0
    x = features.to(torch.float32)
    kernel = gaussian_kernel(x, x, gammas)
    mean_kernel = (onehot.T @ kernel @ onehot) / (counts[:, None] * counts[None, :])
    return (d * torch.diagonal(mean_kernel).sum() - mean_kernel.sum()) / (d * (d - 1) / 2)


def mmd_rows(domains: torch.Tensor, num_domains: int, max_rows: int,
             generator: torch.Generator) -> torch.Tensor | None:
    """Rows on which to compute MMD's kernel this step: at most ``max_rows`` per domain, drawn
    without replacement from ``generator``; None when every domain fits (use all rows)."""
    counts = torch.bincount(domains, minlength=num_domains)
    if int(counts.max()) <= max_rows:
        return None
    keys = torch.rand(domains.numel(), generator=generator, device=domains.device)
    order = torch.argsort(domains.to(torch.float64) * 2 + keys.to(torch.float64))
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(domains.numel(), device=domains.device) - starts[domains[order]]
    return order[rank < max_rows]


__all__ = [
    "coral_penalty",
    "gaussian_kernel",
    "group_mean_losses",
    "groupdro_update",
    "irm_penalty",
    "kde_quantile",
    "mmd_penalty",
    "mmd_rows",
    "vrex_penalty",
]
