"""probes.dg: the terms equal their formulas (and DomainBed's per-domain loops) on hand-made
batches; GroupDRO beats ERM's worst-group accuracy on a spurious-attribute set; worst-group
accuracy equals a hand computation from the saved predictions; choices never see test labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from featkit.errors import FeatkitError
from probes.dg import objectives
from probes.dg.defaults import MMD_GAMMAS
from probes.dg.groups import encode_groups, group_accuracy, worst_group_accuracy
from probes.dg.protocol import DGSplit, GroupNames, check_grids, dg_probe
from probes.dg.train import TrainData, TrainOptions, train_algorithm


def test_groupdro_update_is_the_exponentiated_gradient_step():
    q = torch.tensor([0.5, 0.25, 0.25, 0.0])
    losses = torch.tensor([1.0, 2.0, 0.5, 9.0])
    present = torch.tensor([True, True, True, False])
    new = objectives.groupdro_update(q, losses, 0.1, present)
    raw = [0.5 * math.exp(0.1), 0.25 * math.exp(0.2), 0.25 * math.exp(0.05), 0.0]
    np.testing.assert_allclose(new.numpy(), np.array(raw) / sum(raw), rtol=1e-6)
    # DomainBed's loop over minibatches: q[m] *= exp(eta * loss[m]); q /= q.sum()
    q_loop = [0.5, 0.25, 0.25]
    for m, loss in enumerate([1.0, 2.0, 0.5]):
        q_loop[m] *= math.exp(0.1 * loss)
    np.testing.assert_allclose(new[:3].numpy(), np.array(q_loop) / sum(q_loop), rtol=1e-6)


def test_group_mean_losses_and_vrex_penalty_match_the_per_domain_loop():
    torch.manual_seed(0)
    logits, labels = torch.randn(12, 3), torch.randint(0, 3, (12,))
    domains = torch.tensor([0, 1, 2, 0, 1, 2, 0, 0, 1, 2, 2, 2])
    losses = F.cross_entropy(logits, labels, reduction="none")
    risks, counts = objectives.group_mean_losses(losses, domains, 3)
    loop = torch.stack([F.cross_entropy(logits[domains == d], labels[domains == d])
                        for d in range(3)])
    torch.testing.assert_close(risks, loop)
    assert counts.tolist() == [4, 3, 5]
    r = torch.tensor([1.0, 2.0, 4.0])
    mean = 7 / 3
    assert float(objectives.vrex_penalty(r)) == pytest.approx(
        ((1 - mean) ** 2 + (2 - mean) ** 2 + (4 - mean) ** 2) / 3)


def test_irm_penalty_is_the_squared_scale_gradient_per_domain():
    torch.manual_seed(1)
    logits, labels = torch.randn(10, 4, dtype=torch.float64), torch.randint(0, 4, (10,))
    domains = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
    expected = []
    for d in range(3):
        scale = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
        loss = F.cross_entropy(logits[domains == d] * scale, labels[domains == d])
        (grad,) = torch.autograd.grad(loss, [scale])
        expected.append(float(grad) ** 2)
    got = objectives.irm_penalty(logits, labels, domains, 3)
    assert float(got) == pytest.approx(np.mean(expected), rel=1e-10)
    # and it is differentiable in the logits, like the autograd version
    z = logits.clone().requires_grad_()
    objectives.irm_penalty(z, labels, domains, 3).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_kde_quantile_solves_the_kde_cdf_and_has_the_implicit_gradient():
    risks = torch.tensor([0.3, 0.9, 1.4, 2.0], dtype=torch.float64, requires_grad=True)
    q = objectives.kde_quantile(risks, 0.75)
    h = float(risks.detach().std()) * (4 / (3 * 4)) ** 0.2
    cdf = torch.special.ndtr((q.detach() - risks.detach()) / h).mean()
    assert float(cdf) == pytest.approx(0.75, abs=1e-9)
    (grad,) = torch.autograd.grad(q, risks)
    eps, numeric = 1e-6, []
    for i in range(4):  # finite differences at a fixed bandwidth
        shifted = risks.detach().clone()
        shifted[i] += eps
        lo, hi = -10.0, 10.0
        for _ in range(200):
            mid = (lo + hi) / 2
            below = float(torch.special.ndtr((mid - shifted) / h).mean()) < 0.75
            lo, hi = (mid, hi) if below else (lo, mid)
        numeric.append(((lo + hi) / 2 - float(q.detach())) / eps)
    np.testing.assert_allclose(grad.numpy(), numeric, atol=1e-4)
    assert float(grad.sum()) == pytest.approx(1.0)
    assert float(objectives.kde_quantile(torch.tensor([1.5]), 0.9)) == 1.5


def _domainbed_pairs(features, domains, n_domains, distance):
    """DomainBed's AbstractMMD.update penalty: the mean over domain pairs i < j."""
    parts = [features[domains == d] for d in range(n_domains)]
    total, pairs = 0.0, 0
    for i in range(n_domains):
        for j in range(i + 1, n_domains):
            total += distance(parts[i], parts[j])
            pairs += 1
    return total / pairs


def _coral(x, y):
    mean_x, mean_y = x.mean(0, keepdim=True), y.mean(0, keepdim=True)
    cova_x = (x - mean_x).T @ (x - mean_x) / (len(x) - 1)
    cova_y = (y - mean_y).T @ (y - mean_y) / (len(y) - 1)
    return (mean_x - mean_y).pow(2).mean() + (cova_x - cova_y).pow(2).mean()


def _mmd(x, y):
    def kernel(a, b):
        d = (a.pow(2).sum(1, keepdim=True) - 2 * a @ b.T + b.pow(2).sum(1)).clamp_min(1e-30)
        return sum(torch.exp(-g * d) for g in MMD_GAMMAS)
    return kernel(x, x).mean() + kernel(y, y).mean() - 2 * kernel(x, y).mean()


def test_coral_and_mmd_penalties_equal_domainbeds_pairwise_loops():
    torch.manual_seed(2)
    features = torch.randn(40, 5)
    domains = torch.tensor([0] * 10 + [1] * 15 + [2] * 7 + [3] * 8)
    features[domains == 1] += 0.5
    torch.testing.assert_close(objectives.coral_penalty(features, domains, 4),
                               _domainbed_pairs(features, domains, 4, _coral))
    torch.testing.assert_close(objectives.mmd_penalty(features * 0.3, domains, 4),
                               _domainbed_pairs(features * 0.3, domains, 4, _mmd))
    one = torch.zeros(40, dtype=torch.int64)
    assert float(objectives.coral_penalty(features, one, 4)) == 0.0
    assert float(objectives.mmd_penalty(features, one, 4)) == 0.0


def test_mmd_rows_caps_each_domain_and_is_seeded():
    domains = torch.tensor([0] * 30 + [1] * 5 + [2] * 12)
    g = torch.Generator().manual_seed(0)
    rows = objectives.mmd_rows(domains, 3, 8, g)
    assert torch.bincount(domains[rows], minlength=3).tolist() == [8, 5, 8]
    assert len(set(rows.tolist())) == len(rows)
    again = objectives.mmd_rows(domains, 3, 8, torch.Generator().manual_seed(0))
    assert rows.tolist() == again.tolist()
    assert objectives.mmd_rows(domains, 3, 30, g) is None


def test_encode_groups_shares_ids_across_splits():
    groups = encode_groups({
        "train": {"class": ["a", "b", "a"], "env": ["x", "x", "y"]},
        "test": {"class": ["b", "a"], "env": ["y", "y"]},
    }, ("class", "env"))
    assert groups.names == ("class=a|env=x", "class=a|env=y", "class=b|env=x", "class=b|env=y")
    assert groups.ids["train"].tolist() == [0, 2, 1] and groups.ids["test"].tolist() == [3, 1]
    per_group = group_accuracy(np.array([1, 0, 0]), np.array([1, 1, 0]), np.array([0, 0, 2]), 4)
    np.testing.assert_array_equal(per_group, [0.5, np.nan, 1.0, np.nan])
    assert worst_group_accuracy(per_group) == 0.5


def spurious_set(seed: int = 0, n_train: int = 2000, n_test: int = 2000, dim: int = 8,
                 val_agree: float = 0.95):
    """Two classes; a weak core feature, and an attribute that predicts the class in train and
    val (95 %, ``val_agree`` in val) but is independent of it in test; groups = (class,
    attribute)."""
    rng = np.random.default_rng(seed)

    def make(n, agree):
        y = rng.integers(0, 2, n)
        a = np.where(rng.random(n) < agree, y, 1 - y)
        x = rng.normal(0, 1, (n, dim)).astype(np.float32)
        x[:, 0] += 1.0 * (2 * y - 1)  # core: useful everywhere
        x[:, 1] += 3.0 * (2 * a - 1)  # spurious: follows the attribute
        return DGSplit(x, y, 2 * y + a, a, 2 * y + a)

    names = GroupNames(("c0", "c1"), tuple(f"class=c{y}|attr={a}" for y in (0, 1) for a in (0, 1)),
                       ("attr=0", "attr=1"), tuple(f"class=c{y}|attr={a}" for y in (0, 1)
                                                   for a in (0, 1)))
    return make(n_train, 0.95), make(n_train // 4, val_agree), make(n_test, 0.5), names


def test_groupdro_beats_erm_worst_group_on_a_spurious_attribute():
    train, val, test, names = spurious_set()
    result = dg_probe(train, val, test, names=names, algorithms=["erm", "groupdro"], seeds=2,
                      grids={"groupdro": (0.01, 0.1, 1.0)},
                      options=TrainOptions(steps=150, lr=0.05), normalization="none",
                      device="cpu", progress=False)
    erm, dro = result.algorithms["erm"].worst_group, result.algorithms["groupdro"].worst_group
    assert dro["mean"] > erm["mean"] + 0.15, (erm, dro)
    assert result.metrics()["groupdro.worst_group"] == dro["mean"]


def test_worst_group_accuracy_equals_a_hand_computation_from_the_predictions():
    train, val, test, names = spurious_set(seed=3, n_train=400, n_test=300)
    result = dg_probe(train, val, test, names=names, algorithms=["erm", "vrex"], seeds=2,
                      options=TrainOptions(steps=30, burnin=10), normalization="none",
                      device="cpu", progress=False)
    for name, predictions in result.predictions().items():
        worst, average = [], []
        for row in predictions:
            accuracy = {}
            for g in range(4):
                members = [i for i in range(len(row)) if test.eval_groups[i] == g]
                accuracy[g] = sum(row[i] == test.labels[i] for i in members) / len(members)
            worst.append(min(accuracy.values()))
            average.append(float(np.mean(row == test.labels)))
        summary = result.algorithms[name]
        assert summary.worst_group["mean"] == pytest.approx(np.mean(worst))
        assert summary.worst_group["std"] == pytest.approx(np.std(worst, ddof=1))
        assert summary.average["mean"] == pytest.approx(np.mean(average))


def test_choices_never_see_test_labels():
    train, val, test, names = spurious_set(seed=4, n_train=300, n_test=200)
    shuffled = DGSplit(test.features, np.random.default_rng(0).permutation(test.labels),
                       test.groups, test.domains, test.eval_groups)
    kwargs = dict(names=names, algorithms=["groupdro", "irm"], seeds=2, device="cpu",
                  options=TrainOptions(steps=20, burnin=5), progress=False)
    a = dg_probe(train, val, test, **kwargs)
    b = dg_probe(train, val, shuffled, **kwargs)
    for name in ("groupdro", "irm"):
        assert [r.value for r in a.algorithms[name].runs] == \
            [r.value for r in b.algorithms[name].runs]
        assert [r.val_curve for r in a.algorithms[name].runs] == \
            [r.val_curve for r in b.algorithms[name].runs]
        np.testing.assert_array_equal(a.predictions()[name], b.predictions()[name])


def _data(seed=5, n=200, dim=6, adapter=False):
    train, _, _, _ = spurious_set(seed=seed, n_train=n)
    return TrainData(torch.as_tensor(train.features), torch.as_tensor(train.labels),
                     torch.as_tensor(train.groups), torch.as_tensor(train.domains), 2, 4, 2)


@pytest.mark.parametrize("algorithm", ["vrex", "irm", "eqrm"])
def test_shared_burnin_equals_separate_runs(algorithm):
    data, options = _data(), TrainOptions(steps=12, burnin=5)
    values = (0.5, 0.9) if algorithm == "eqrm" else (1.0, 10.0)
    together = train_algorithm(data, algorithm, values, options, seed=3)
    for value, network in zip(values, together):
        (alone,) = train_algorithm(data, algorithm, [value], options, seed=3)
        for p, q in zip(network.parameters(), alone.parameters()):
            torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_feature_matching_needs_an_adapter():
    train, val, test, names = spurious_set(seed=6, n_train=300, n_test=200)
    kwargs = dict(names=names, seeds=1, device="cpu", progress=False, resplit=False)
    frozen = dg_probe(train, val, test, algorithms=["coral", "mmd"],
                      options=TrainOptions(steps=15), **kwargs)
    assert frozen.algorithms["coral"].grid == () and frozen.algorithms["coral"].runs[0].value is None
    assert any("constant without gradient" in w for w in frozen.warnings)
    adapted = dg_probe(train, val, test, algorithms=["coral", "mmd"],
                       grids={"coral": (1.0, 10.0), "mmd": (1.0,)},
                       options=TrainOptions(steps=15, adapter_dim=4, mmd_max_rows=50), **kwargs)
    assert adapted.algorithms["coral"].grid == (1.0, 10.0)
    assert not any("constant without gradient" in w for w in adapted.warnings)


def test_edge_warnings_and_bad_grids():
    # eta -> 0 is GroupDRO's uniform group weights; eta = 1 oscillates: the small edge wins
    train, val, test, names = spurious_set(seed=0, n_train=1000, n_test=200, val_agree=0.5)
    result = dg_probe(train, val, test, names=names, algorithms=["groupdro"], seeds=2,
                      grids={"groupdro": (1e-5, 1.0)}, options=TrainOptions(steps=150, lr=0.05),
                      normalization="none", resplit=False, device="cpu", progress=False)
    assert [r.value for r in result.algorithms["groupdro"].runs] == [1e-5, 1e-5]
    assert any("groupdro: eta = 1e-05 is the smallest value of the grid" in w
               for w in result.warnings), result.warnings
    with pytest.raises(FeatkitError, match="unknown DG algorithm.*dro"):
        check_grids(["dro"], None)
    with pytest.raises(FeatkitError, match="eqrm: quantile values must be strictly between"):
        check_grids(["eqrm"], {"eqrm": (0.5, 1.0)})
    with pytest.raises(FeatkitError, match="--grid erm: no hyper-parameter grid"):
        check_grids(["erm"], {"erm": (1.0,)})


def test_resplit_is_seeded_and_stratified_by_group():
    train, val, test, names = spurious_set(seed=8, n_train=300, n_test=100)
    kwargs = dict(names=names, algorithms=["erm"], device="cpu", progress=False,
                  options=TrainOptions(steps=5))
    a = dg_probe(train, val, test, seeds=[0, 1], **kwargs)
    b = dg_probe(train, val, test, seeds=[0, 1], **kwargs)
    np.testing.assert_array_equal(a.predictions()["erm"], b.predictions()["erm"])
    assert a.settings["resplit"] is True and a.settings["seeds"] == [0, 1]
