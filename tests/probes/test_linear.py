"""Linear probe: the solver against scikit-learn, the sweep protocol, the saved probe and the
classification scores."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, top_k_accuracy_score

from featkit.errors import FeatkitError
from probes.classification import score_classification
from probes.linear import (
    LinearProbe,
    default_c_grid,
    evaluate_linear_probe,
    fit_linear_probe,
    fit_logistic_regression,
    linear_probe,
    regularized_loss,
)


def make_data(seed=0, n_train=240, n_val=80, n_test=160, dim=12, n_classes=5, spread=1.6):
    """Gaussian classes around shared centres: an easy-but-not-trivial problem."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, dim))
    offset = 2.0 * rng.standard_normal(dim)

    def draw(n):
        labels = np.arange(n) % n_classes
        rng.shuffle(labels)
        x = centres[labels] + offset + spread * rng.standard_normal((n, dim))
        return x.astype(np.float32), labels.astype(np.int64)

    return draw(n_train), draw(n_val), draw(n_test)


def sklearn_fit(x, y, C):
    return LogisticRegression(C=C, solver="lbfgs", tol=1e-10, max_iter=20000).fit(
        np.asarray(x, dtype=np.float64), y
    )


@pytest.mark.parametrize("C", [0.01, 1.0, 30.0])
def test_single_fit_matches_sklearn(C):
    (x, y), _, (xt, yt) = make_data()
    ours = fit_logistic_regression(x, y, C, tol=1e-9, dtype="float64", device="cpu")
    ref = sklearn_fit(x, y, C)
    ref_loss = regularized_loss(ref.coef_, ref.intercept_, x, y, C)
    our_loss = regularized_loss(ours.weight, ours.bias, x, y, C)
    assert our_loss == pytest.approx(ours.loss, rel=1e-9)  # the solver reports what it minimised
    assert abs(our_loss - ref_loss) <= 1e-4 * ref_loss
    assert our_loss <= ref_loss * (1 + 1e-7)
    our_acc = np.mean(np.argmax(xt @ ours.weight.T + ours.bias, 1) == yt)
    assert abs(our_acc - ref.score(xt, yt)) <= 0.005
    np.testing.assert_allclose(ours.weight, ref.coef_, atol=2e-3 * max(1.0, np.abs(ref.coef_).max()))


def test_sweep_path_float32_matches_sklearn_at_chosen_C():
    """The real path (float32, warm-started sweep with carried-over history) lands on
    scikit-learn's optimum at the chosen C."""
    (x, y), (xv, yv), (xt, yt) = make_data(seed=1)
    fit = fit_linear_probe(
        x, y, xv, yv, normalization="none", c_grid=[1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0],
        refit_on_val=False, tol=1e-6, device="cpu", progress=False,
    )
    ref = sklearn_fit(x, y, fit.C)
    ref_loss = regularized_loss(ref.coef_, ref.intercept_, x, y, fit.C)
    our_loss = regularized_loss(fit.probe.weight, fit.probe.bias, x, y, fit.C)
    assert abs(our_loss - ref_loss) <= 1e-4 * ref_loss
    result = evaluate_linear_probe(fit, xt, yt)
    assert abs(result.top1 - ref.score(xt, yt)) <= 0.005
    # every sweep point's val score matches a cold scikit-learn fit at that C
    for point in fit.sweep:
        assert point.val_top1 == pytest.approx(sklearn_fit(x, y, point.C).score(xv, yv), abs=0.0126)


def test_refit_on_val_optimises_train_plus_val():
    (x, y), (xv, yv), _ = make_data(seed=2)
    fit = fit_linear_probe(
        x, y, xv, yv, normalization="none", c_grid=[0.1, 1.0, 10.0], refit_on_val=True,
        tol=1e-7, dtype="float64", device="cpu", progress=False,
    )
    both_x, both_y = np.concatenate([x, xv]), np.concatenate([y, yv])
    ref = sklearn_fit(both_x, both_y, fit.C)
    ref_loss = regularized_loss(ref.coef_, ref.intercept_, both_x, both_y, fit.C)
    our_loss = regularized_loss(fit.probe.weight, fit.probe.bias, both_x, both_y, fit.C)
    assert abs(our_loss - ref_loss) <= 1e-4 * ref_loss
    assert fit.settings()["refit_on_val"] is True and fit.n_val == len(yv)


def test_selection_never_reads_test_labels():
    assert not any("test" in name for name in inspect.signature(fit_linear_probe).parameters)
    (x, y), (xv, yv), (xt, yt) = make_data(seed=3)
    options = dict(c_grid=default_c_grid(), device="cpu", progress=False)
    first = linear_probe(x, y, xv, yv, xt, yt, **options)
    shuffled = np.random.default_rng(0).permutation(yt)
    second = linear_probe(x, y, xv, yv, xt, shuffled, **options)
    assert second.C == first.C
    assert second.sweep_curve() == first.sweep_curve()
    np.testing.assert_array_equal(second.fit.probe.weight, first.fit.probe.weight)
    assert second.top1 != first.top1  # the test labels do reach the final score


def test_deterministic_bitwise():
    (x, y), (xv, yv), (xt, yt) = make_data(seed=4)
    runs = [
        linear_probe(x, y, xv, yv, xt, yt, normalization="standardize", device="cpu",
                     progress=False)
        for _ in range(2)
    ]
    np.testing.assert_array_equal(runs[0].fit.probe.weight, runs[1].fit.probe.weight)
    np.testing.assert_array_equal(runs[0].fit.probe.bias, runs[1].fit.probe.bias)
    assert runs[0].sweep_curve() == runs[1].sweep_curve()
    assert runs[0].metrics() == runs[1].metrics()


def test_val_ties_choose_the_stronger_regularisation():
    # well separated classes: every C in the grid gets val top-1 = 1
    (x, y), (xv, yv), _ = make_data(seed=5, spread=0.05)
    fit = fit_linear_probe(x, y, xv, yv, c_grid=[10.0, 1.0, 100.0], device="cpu", progress=False)
    assert [p.val_top1 for p in fit.sweep] == [1.0, 1.0, 1.0]
    assert [p.C for p in fit.sweep] == [1.0, 10.0, 100.0]
    assert fit.C == 1.0


def test_normalisations_are_stored_and_applied():
    (x, y), (xv, yv), (xt, yt) = make_data(seed=6)
    for normalization in ("none", "l2", "standardize"):
        fit = fit_linear_probe(x, y, xv, yv, normalization=normalization, c_grid=[1.0, 10.0],
                               device="cpu", progress=False)
        probe = fit.probe
        assert probe.normalization == normalization
        if normalization == "l2":
            z = xt / np.linalg.norm(xt, axis=1, keepdims=True)
        elif normalization == "standardize":
            np.testing.assert_allclose(probe.mean, x.mean(0), atol=1e-5)  # train statistics
            np.testing.assert_allclose(probe.std, x.std(0), rtol=1e-5)
            z = (xt - x.mean(0)) / x.std(0)
        else:
            z = xt
        np.testing.assert_allclose(
            probe.predict_scores(xt), z @ probe.weight.T + probe.bias, rtol=1e-4, atol=1e-4
        )
        assert fit.settings()["normalization"] == normalization
    with pytest.raises(FeatkitError, match="unknown normalisation"):
        fit_linear_probe(x, y, xv, yv, normalization="zscore", progress=False)


def test_default_grid_scales_with_feature_norm():
    (x, y), (xv, yv), _ = make_data(seed=7)
    grid = default_c_grid()
    assert len(grid) >= 12 and grid[0] == pytest.approx(1e-2) and grid[-1] == pytest.approx(1e5)
    assert np.allclose(np.diff(np.log10(grid)), 0.5)
    assert default_c_grid(4.0)[3] == pytest.approx(grid[3] / 4.0)
    fit = fit_linear_probe(x, y, xv, yv, normalization="none", device="cpu", progress=False)
    mean_sq = float(np.mean(np.sum(x.astype(np.float64) ** 2, axis=1)))
    np.testing.assert_allclose(fit.settings()["c_grid"], np.array(grid) / mean_sq, rtol=1e-5)


def test_probe_save_load_and_differentiable_logits(tmp_path):
    (x, y), (xv, yv), (xt, _) = make_data(seed=8)
    fit = fit_linear_probe(x, y, xv, yv, normalization="standardize", c_grid=[1.0],
                           class_names=[f"c{i}" for i in range(5)], device="cpu",
                           progress=False)
    for name in ("probe.npz", "probe.pt"):
        loaded = LinearProbe.load(fit.probe.save(tmp_path / name))
        assert loaded.class_names == fit.probe.class_names
        assert loaded.normalization == "standardize" and loaded.C == fit.C
        np.testing.assert_array_equal(loaded.weight, fit.probe.weight)
        np.testing.assert_array_equal(loaded.mean, fit.probe.mean)
        np.testing.assert_array_equal(loaded.predict_scores(xt), fit.probe.predict_scores(xt))
    feats = torch.tensor(xt[:4], requires_grad=True)
    loss = torch.nn.functional.cross_entropy(fit.probe.logits(feats), torch.tensor(y[:4]))
    loss.backward()
    assert feats.grad is not None and torch.all(torch.isfinite(feats.grad))
    assert feats.grad.abs().sum() > 0
    with pytest.raises(FeatkitError, match=r"\.npz or \.pt"):
        fit.probe.save(tmp_path / "probe.json")
    with pytest.raises(FeatkitError, match="does not exist"):
        LinearProbe.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(FeatkitError, match="not a saved linear probe"):
        LinearProbe.load(tmp_path / "junk.npz")


def test_input_errors():
    (x, y), (xv, yv), _ = make_data(seed=9)
    with pytest.raises(FeatkitError, match="no training samples"):
        fit_linear_probe(x, y, xv, yv, class_names=list("abcdef"), progress=False)
    with pytest.raises(FeatkitError, match="must lie in"):
        fit_linear_probe(x, y, xv, yv + 1, class_names=list("abcde"), progress=False)
    with pytest.raises(FeatkitError, match="same width"):
        fit_linear_probe(x, y, xv[:, :3], yv, progress=False)
    with pytest.raises(FeatkitError, match="empty"):
        fit_linear_probe(x, y, xv[:0], yv[:0], progress=False)


def test_classification_scores_match_sklearn():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((300, 9))
    labels = rng.integers(0, 9, 300)
    labels[:9] = np.arange(9)
    m = score_classification(scores, labels)
    assert m.top1 == pytest.approx(np.mean(scores.argmax(1) == labels))
    assert m.top5 == pytest.approx(top_k_accuracy_score(labels, scores, k=5))
    assert m.mean_per_class == pytest.approx(balanced_accuracy_score(labels, scores.argmax(1)))
    assert m.per_class["3"] == pytest.approx(np.mean(scores[labels == 3].argmax(1) == 3))


def test_classification_ties_go_to_lower_class_and_missing_classes_are_skipped():
    scores = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0], [5.0, 5.0, 5.0]])
    m = score_classification(scores, np.array([1, 2, 0]), ["a", "b", "c"])
    assert m.top1 == pytest.approx(1 / 3)  # predictions 0, 1, 0
    assert m.per_class == {"a": 1.0, "b": 0.0, "c": 0.0}
    two = score_classification(np.array([[0.2, 0.8], [0.9, 0.1]]), np.array([1, 1]))
    assert two.top5 == 1.0 and two.per_class == {"1": 0.5} and two.mean_per_class == 0.5


def test_lbfgs_history_matches_the_textbook_two_loop():
    """The inner-product form of the two-loop recursion (inner products updated
    algebraically, memory overwritten when full) and the exact correction of stored pairs
    when the L2 strength changes, against the plain recursion on explicit pairs."""
    from probes.linear.solver import LbfgsHistory

    def two_loop(pairs, grad):
        q, alphas = -grad.clone(), []
        for s, y in reversed(pairs):
            alphas.append((s @ q) / (s @ y))
            q -= alphas[-1] * y
        s, y = pairs[-1]
        q *= (s @ y) / (y @ y)
        for (s, y), alpha in zip(pairs, reversed(alphas)):
            q += (alpha - (y @ q) / (s @ y)) * s
        return q

    gen = torch.Generator().manual_seed(0)
    shape = (3, 4)  # a 3-class, 3-feature + bias parameter block, flattened
    a = torch.randn(12, 12, dtype=torch.float64, generator=gen)
    hessian = a @ a.T + torch.eye(12, dtype=torch.float64)
    b = torch.randn(12, dtype=torch.float64, generator=gen)
    x = torch.zeros(12, dtype=torch.float64)
    history, pairs = LbfgsHistory(3), []
    history.start(hessian @ x - b)
    for _ in range(6):  # more pairs than the memory holds: the oldest are overwritten
        direction = history.direction()
        if pairs:
            torch.testing.assert_close(direction, two_loop(pairs, hessian @ x - b))
        step = 0.3
        x_new = x + step * direction
        grad, new_grad = hessian @ x - b, hessian @ x_new - b
        history.accept(step, direction, new_grad)
        pairs = (pairs + [(step * direction, new_grad - grad)])[-3:]
        x = x_new
    torch.testing.assert_close(history.direction(), two_loop(pairs, hessian @ x - b))
    # the L2 strength grows by 0.25 on the weights (not the bias column)
    mask = torch.ones(shape, dtype=torch.float64)
    mask[:, -1] = 0
    mask = mask.reshape(-1)
    history.shift_penalty(0.25, shape)
    shifted_grad = hessian @ x - b + 0.25 * mask * x
    history.start(shifted_grad)
    shifted = [(s, y + 0.25 * mask * s) for s, y in pairs]
    torch.testing.assert_close(history.direction(), two_loop(shifted, shifted_grad))


def _naive_logits(probe: LinearProbe, x: torch.Tensor) -> torch.Tensor:
    """Normalise, then ``x W^T + b`` through plain autograd ops."""
    weight = torch.as_tensor(probe.weight, dtype=x.dtype)
    bias = torch.as_tensor(probe.bias, dtype=x.dtype)
    if probe.normalization == "l2":
        x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    elif probe.normalization == "standardize":
        x = (x - torch.as_tensor(probe.mean, dtype=x.dtype)) / torch.as_tensor(probe.std,
                                                                               dtype=x.dtype)
    return x @ weight.T + bias


@pytest.mark.parametrize("normalization", ["none", "l2", "standardize"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rows", [1, 4, 70])
def test_probe_logits_and_input_gradient_equal_plain_autograd(normalization, dtype, rows):
    rng = np.random.default_rng(3)
    dim, k = 40, 7
    probe = LinearProbe(
        weight=rng.standard_normal((k, dim)).astype(np.float32),
        bias=rng.standard_normal(k).astype(np.float32),
        class_names=tuple("abcdefg"),
        normalization=normalization,
        mean=rng.standard_normal(dim).astype(np.float32) if normalization == "standardize" else None,
        std=rng.uniform(0.5, 2, dim).astype(np.float32) if normalization == "standardize" else None,
    )
    x = torch.as_tensor(3.0 * rng.standard_normal((rows, dim)), dtype=dtype)
    if rows > 2:  # l2: rows whose norm is clamped to 1e-12, where the radial term must vanish
        x[1] = 0.0
        x[2] *= 1e-14
    upstream = torch.as_tensor(rng.standard_normal((rows, k)), dtype=dtype)
    grads = []
    for logits_of in (probe.logits, lambda t: _naive_logits(probe, t)):
        point = x.clone().requires_grad_(True)
        logits = logits_of(point)
        (grad,) = torch.autograd.grad((logits * upstream).sum(), point)
        grads.append((logits.detach(), grad))
    (ours, ours_grad), (ref, ref_grad) = grads
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert torch.allclose(ours, ref, rtol=tol, atol=tol * ref.abs().max())
    assert torch.allclose(ours_grad, ref_grad, rtol=tol, atol=tol * ref_grad.abs().max())


def test_probe_pickles_and_copies_after_use():
    import copy
    import pickle

    rng = np.random.default_rng(4)
    probe = LinearProbe(weight=rng.standard_normal((5, 16)).astype(np.float32),
                        bias=np.zeros(5, np.float32), class_names=tuple("abcde"),
                        normalization="l2")
    x = torch.as_tensor(rng.standard_normal((10, 16)), dtype=torch.float32)
    before = probe.logits(x)  # fills the tensor cache (packed weights included)
    # a pickle written before probes.linear became a package names probes.linear.LinearProbe
    old_path = pickle.dumps(probe, protocol=0).replace(b"probes.linear.head\n",
                                                       b"probes.linear\n")
    assert b"probes.linear\nLinearProbe" in old_path
    clones = (pickle.loads(pickle.dumps(probe)), pickle.loads(old_path), copy.deepcopy(probe))
    for clone in clones:
        np.testing.assert_array_equal(clone.weight, probe.weight)
        assert clone.normalization == "l2" and clone.class_names == probe.class_names
        assert torch.equal(clone.logits(x), before)


def test_unknown_dtype_and_device_are_one_line_errors():
    (x, y), (xv, yv), _ = make_data(n_train=40, n_val=20, n_test=10, dim=4, n_classes=2)
    with pytest.raises(FeatkitError, match="dtype must be float32 or float64"):
        fit_linear_probe(x, y, xv, yv, dtype="float16", progress=False)
    with pytest.raises(FeatkitError, match="not a device torch knows"):
        fit_logistic_regression(x, y, 1.0, device="gpu0")
