"""Feature-space PGD: budgets, exact clean point, ascent, torchattacks equivalence, closed form."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featkit.errors import FeatkitError
from probes.perturb import choose_targets, eps_scale, eps_sweep, perturb_features, pgd


class LinearHead:
    """A plain ``x @ W.T + b`` head with the probe protocol (``logits``)."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray) -> None:
        self.weight = torch.as_tensor(weight)
        self.bias = torch.as_tensor(bias)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return features @ self.weight.to(features.dtype).T + self.bias.to(features.dtype)


def _problem(n=120, d=16, k=5, scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(k, d)).astype(np.float32)
    bias = rng.normal(scale=0.1, size=k).astype(np.float32)
    x = (scale * rng.normal(size=(n, d))).astype(np.float32)
    y = rng.integers(0, k, size=n)
    y[: n // 2] = (x[: n // 2] @ weight.T + bias).argmax(1)  # half correct, half mostly wrong
    return LinearHead(weight, bias), x, y


def _ord(norm):
    return np.inf if norm == "linf" else 2


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("random_start", [False, True])
def test_delta_within_budget_for_every_sample(norm, random_start):
    head, x, y = _problem(scale=7.0)
    for eps in (0.05, 0.7, 9.0):  # big budgets exercise float32 rounding of the L2 projection
        _, point = perturb_features(head, x, y, eps=eps, norm=norm, steps=8, alpha=eps,
                                    random_start=random_start, device="cpu")
        norms = np.linalg.norm(point.delta.astype(np.float64), ord=_ord(norm), axis=1)
        assert norms.max() <= eps + 1e-6
        assert norms.max() >= 0.999 * eps  # the budget binds, so the bound is tested
        np.testing.assert_allclose(point.delta_norms, norms, rtol=1e-12)
        assert point.mean_delta_norm == pytest.approx(norms.mean())


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_eps_zero_gives_the_clean_accuracy_exactly(norm):
    head, x, y = _problem()
    sweep = eps_sweep(head, x, y, [0.0, 0.5], norm=norm, steps=5, alpha=0.3, random_start=True,
                      progress=False, device="cpu")
    zero = sweep.points[0]
    assert zero.top1 == sweep.clean_top1
    np.testing.assert_array_equal(zero.predictions, sweep.clean_predictions)
    np.testing.assert_array_equal(zero.loss_adv, zero.loss_clean)
    assert zero.mean_delta_norm == 0.0 and zero.success_rate == 0.0
    assert sweep.points[1].top1 < sweep.clean_top1  # and a real budget does something


def test_linf_loss_never_decreases_on_a_linear_head():
    """CE(Wx + b) is convex in x, so each projected sign step is an ascent step per sample."""
    head, x, y = _problem()
    sweep = eps_sweep(head, x, y, [0.02, 0.3], norm="linf", steps=6, progress=False,
                      dtype="float64", device="cpu")
    for point in sweep.points:
        assert np.all(point.loss_adv >= point.loss_clean - 1e-12)
        assert np.all(np.diff(point.loss_trace) >= -1e-12)
        assert point.mean_loss_adv > point.mean_loss_clean


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("target", ["none", "least-likely", "random"])
def test_loss_after_attack_at_least_before_with_a_normalising_probe(norm, target):
    from probes.linear import fit_linear_probe

    rng = np.random.default_rng(1)
    centres = rng.normal(size=(4, 12)) * 2
    labels = rng.integers(0, 4, size=300)
    feats = (centres[labels] + rng.normal(size=(300, 12)) + 5).astype(np.float32)
    probe = fit_linear_probe(feats[:200], labels[:200], feats[200:240], labels[200:240],
                             normalization="l2", progress=False, device="cpu").probe
    sweep = eps_sweep(probe, feats[240:], labels[240:], [0.3], eps_rel=True, norm=norm,
                      steps=10, target=target, progress=False, device="cpu")
    point = sweep.points[0]
    if target == "none":
        assert point.mean_loss_adv >= point.mean_loss_clean
        assert point.top1 < sweep.clean_top1
    else:  # the targeted objective (CE to the target) goes down instead
        assert point.loss_trace[-1] <= point.loss_trace[0]
        assert point.mean_loss_adv >= point.mean_loss_clean


def _torchattacks_model(head: LinearHead, four_d: bool) -> torch.nn.Module:
    linear = torch.nn.Linear(head.weight.shape[1], head.weight.shape[0])
    with torch.no_grad():
        linear.weight.copy_(head.weight)
        linear.bias.copy_(head.bias)
    if four_d:
        return torch.nn.Sequential(torch.nn.Flatten(), linear)
    return linear


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("targeted", [False, True])
def test_matches_torchattacks_step_for_step_in_the_unit_box(norm, targeted):
    """Features mapped into [0.3, 0.7], so torchattacks' [0, 1] clamp never binds."""
    import torchattacks

    head, x, y = _problem(n=64, d=16, k=5)
    x = (0.3 + 0.4 * (x - x.min()) / (x.max() - x.min())).astype(np.float32)
    eps, alpha = (0.05, 0.02) if norm == "linf" else (0.15, 0.06)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    targets = None
    if targeted:
        targets = torch.from_numpy(choose_targets(head.logits(xt), y, "least-likely"))
    model = _torchattacks_model(head, four_d=norm == "l2")
    for steps in range(1, 7):
        if norm == "linf":
            attack = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=False)
            inputs = xt
        else:
            attack = torchattacks.PGDL2(model, eps=eps, alpha=alpha, steps=steps,
                                        random_start=False)
            inputs = xt[:, :, None, None]
        if targeted:
            attack.set_mode_targeted_by_label(quiet=True)
        reference = attack(inputs, yt if targets is None else targets).reshape(x.shape)
        delta = pgd(head, xt, yt, eps=eps, alpha=alpha, steps=steps, norm=norm, targets=targets)
        assert torch.max(torch.abs((xt + delta) - reference)) <= 1e-6, steps
    assert torch.max(torch.abs(delta)) > 0


def test_torchattacks_on_raw_features_is_the_documented_trap():
    """torchattacks clamps raw features to [0, 1]; ours keeps them and stays within eps."""
    import torchattacks

    head, x, y = _problem(n=32)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    theirs = torchattacks.PGD(_torchattacks_model(head, False), eps=0.01, alpha=0.01, steps=1,
                              random_start=False)(xt, yt)
    assert torch.max(torch.abs(theirs - xt)) > 0.5  # moved far beyond eps
    delta = pgd(head, xt, yt, eps=0.01, alpha=0.01, steps=1)
    assert torch.max(torch.abs(delta)) <= 0.01 + 1e-7 and ((xt + delta) < 0).any()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_two_class_linear_head_flips_at_the_closed_form_budget(norm):
    """For logits Wx + b with two classes the loss gradient always points along w_other - w_y,
    so PGD reaches the optimal corner/direction and a sample flips iff
    eps > margin / ||w_y - w_other||_dual (dual of L-inf is L1, of L2 is L2)."""
    rng = np.random.default_rng(3)
    d, n = 10, 400
    weight = rng.normal(size=(2, d))
    bias = np.array([0.2, -0.2])
    x = rng.normal(size=(n, d))
    y = (x @ weight.T + bias).argmax(1)  # all clean-correct
    dw = weight[y] - weight[1 - y]
    margin = (x * dw).sum(1) + bias[y] - bias[1 - y]
    threshold = margin / np.linalg.norm(dw, ord=1 if norm == "linf" else 2, axis=1)
    grid = [0.0, 0.02, 0.05, 0.1, 0.2, 0.4, 0.8]
    sweep = eps_sweep(LinearHead(weight, bias), x, y, grid, norm=norm, steps=10,
                      dtype="float64", progress=False, device="cpu")
    assert sweep.clean_top1 == 1.0
    for eps, point in zip(grid, sweep.points):
        flipped = point.predictions != y
        clear = np.abs(threshold - eps) > 0.01 * max(eps, 1e-3)
        np.testing.assert_array_equal(flipped[clear], (threshold < eps)[clear])
        assert clear.mean() > 0.9
        if clear.all():
            assert point.top1 == pytest.approx(np.mean(threshold >= eps))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_batched_attack_equals_a_per_sample_loop(norm):
    head, x, y = _problem(n=30)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    batched = pgd(head, xt, yt, eps=0.3, steps=7, norm=norm)
    looped = torch.cat([pgd(head, xt[i : i + 1], yt[i : i + 1], eps=0.3, steps=7, norm=norm)
                        for i in range(len(x))])
    assert torch.max(torch.abs(batched - looped)) <= 1e-6


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_relative_budget_is_a_fraction_of_the_mean_feature_norm(norm):
    head, x, y = _problem(scale=3.0)
    scale = np.mean(np.linalg.norm(x.astype(np.float64), ord=_ord(norm), axis=1))
    assert eps_scale(x, norm) == pytest.approx(scale, rel=1e-12)
    rel = eps_sweep(head, x, y, [0.05], eps_rel=True, norm=norm, steps=5, progress=False,
                    device="cpu")
    absolute = eps_sweep(head, x, y, [0.05 * scale], norm=norm, steps=5, progress=False,
                         device="cpu")
    assert rel.eps_mode == "relative" and rel.eps_scale == pytest.approx(scale)
    assert rel.points[0].eps == pytest.approx(0.05 * scale)
    assert rel.points[0].eps_rel == pytest.approx(0.05)
    np.testing.assert_array_equal(rel.points[0].predictions, absolute.points[0].predictions)


def test_relative_budget_makes_an_l2_normalising_probe_scale_free():
    from probes.linear import LinearProbe

    rng = np.random.default_rng(4)
    probe = LinearProbe(weight=rng.normal(size=(3, 8)).astype(np.float32),
                        bias=np.zeros(3, np.float32), class_names=("a", "b", "c"),
                        normalization="l2")
    x = rng.normal(size=(100, 8)) + 1
    y = rng.integers(0, 3, size=100)
    small = eps_sweep(probe, x, y, [0.1], eps_rel=True, steps=5, dtype="float64",
                      progress=False, device="cpu")
    large = eps_sweep(probe, 1000 * x, y, [0.1], eps_rel=True, steps=5, dtype="float64",
                      progress=False, device="cpu")
    np.testing.assert_array_equal(small.points[0].predictions, large.points[0].predictions)
    assert large.points[0].mean_delta_norm == pytest.approx(1000 * small.points[0].mean_delta_norm)


def test_targets_and_success_rates_match_naive_definitions():
    head, x, y = _problem(n=80)
    logits = head.logits(torch.from_numpy(x)).numpy()
    least = choose_targets(logits, y, "least-likely")
    for i in range(len(y)):
        others = [c for c in range(logits.shape[1]) if c != y[i]]
        assert least[i] == min(others, key=lambda c: (logits[i, c], c))
    random_a = choose_targets(logits, y, "random", seed=5)
    assert np.all(random_a != y) and set(random_a) == set(range(logits.shape[1]))
    np.testing.assert_array_equal(random_a, choose_targets(logits, y, "random", seed=5))
    assert choose_targets(logits, y, "none") is None

    for target in ("none", "least-likely", "random"):
        sweep = eps_sweep(head, x, y, [0.4], target=target, steps=10, progress=False,
                          device="cpu", seed=5)
        point, clean = sweep.points[0], sweep.clean_predictions
        if target == "none":
            correct = clean == y
            expected = np.mean(point.predictions[correct] != y[correct])
        else:
            expected = np.mean(point.predictions == sweep.targets)
        assert point.success_rate == pytest.approx(expected)
        assert point.top1 == pytest.approx(np.mean(point.predictions == y))
    big = eps_sweep(head, x, y, [20.0], target="least-likely", steps=20, progress=False,
                    device="cpu")
    assert big.points[0].success_rate == 1.0


def test_result_metrics_and_settings_shape():
    head, x, y = _problem()
    sweep = eps_sweep(head, x, y, [0.0, 0.1], steps=3, progress=False, device="cpu")
    metrics = sweep.metrics()
    assert set(metrics) == {"clean_top1", "sweep"}
    assert {"eps", "top1", "success_rate", "mean_delta_norm"} <= set(metrics["sweep"][0])
    assert [row["eps"] for row in metrics["sweep"]] == [0.0, pytest.approx(0.1)]
    settings = sweep.settings()
    assert settings["space"] == "feature" and settings["alpha"] == [0.0, pytest.approx(2.5 * 0.1 / 3)]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"norm": "l3"}, "unknown attack norm"),
        ({"target": "most-likely"}, "unknown target mode"),
        ({"eps_values": [-0.1]}, "non-negative"),
        ({"eps_values": []}, "at least one eps"),
        ({"steps": -1}, "non-negative"),
    ],
)
def test_bad_input_is_a_one_line_featkit_error(kwargs, message):
    head, x, y = _problem(n=10)
    options = {"eps_values": [0.1], **kwargs}
    eps_values = options.pop("eps_values")
    with pytest.raises(FeatkitError, match=message):
        eps_sweep(head, x, y, eps_values, progress=False, device="cpu", **options)


def test_labels_outside_the_probe_classes_are_rejected():
    head, x, y = _problem(n=10, k=3)
    with pytest.raises(FeatkitError, match="probe has 3 classes"):
        eps_sweep(head, x, y + 5, [0.1], progress=False, device="cpu")


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_random_start_is_uniform_in_the_ball(norm):
    from probes.perturb import random_start_delta

    d, eps = 16, 0.5
    generator = torch.Generator().manual_seed(0)
    delta = random_start_delta((4000, d), eps, norm, generator=generator, dtype=torch.float64)
    if norm == "linf":  # each coordinate uniform on [-eps, eps]: CDF at eps/2 is 3/4
        assert torch.all(delta.abs() <= eps)
        assert float((delta <= eps / 2).double().mean()) == pytest.approx(0.75, abs=0.01)
    else:  # uniform in volume: (r / eps)**d is uniform on [0, 1]
        radius = torch.linalg.vector_norm(delta, dim=1)
        assert torch.all(radius <= eps * (1 + 1e-12))
        u = (radius / eps) ** d
        for q in (0.1, 0.5, 0.9):
            assert float((u <= q).double().mean()) == pytest.approx(q, abs=0.03)
    head, x, y = _problem(n=20, d=d)
    started = pgd(head, torch.from_numpy(x), torch.from_numpy(y), eps=eps, steps=0, norm=norm,
                  random_start=True, generator=torch.Generator().manual_seed(1))
    assert torch.all(torch.linalg.vector_norm(started, dim=1) > 0)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_block_size_does_not_change_the_attack(norm):
    from probes.linear import LinearProbe

    head, x, y = _problem(n=90, d=24)
    probe = LinearProbe(weight=head.weight.numpy(), bias=head.bias.numpy(),
                        class_names=tuple("abcde"), normalization="l2")
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    traces = {}
    deltas = {}
    for rows in (None, 90, 7, 1):
        trace = []
        deltas[rows] = pgd(probe, xt, yt, eps=0.4, steps=6, norm=norm, random_start=True,
                           generator=torch.Generator().manual_seed(5), block_rows=rows,
                           loss_trace=trace)
        traces[rows] = np.array(trace)
    for rows in (90, 7, 1):
        assert torch.max(torch.abs(deltas[rows] - deltas[None])) <= 1e-6
        np.testing.assert_allclose(traces[rows], traces[None], rtol=1e-5)
    assert len(traces[None]) == 7 and traces[None][-1] > traces[None][0]
    with pytest.raises(FeatkitError, match="block_rows"):
        pgd(probe, xt, yt, eps=0.4, steps=1, block_rows=0)
