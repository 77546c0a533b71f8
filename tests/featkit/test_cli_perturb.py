"""``featkit perturb`` end to end on the cached digits (pixels:8 and the tiny CLIP)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import featkit
from featkit.cli import main


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(["perturb", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _base(model, cache):
    return ["--model", model, "--dataset", "digits", "--cache-dir", cache, "--no-progress"]


@pytest.fixture(scope="module")
def pixels_run(digits_cache, tmp_path_factory):
    """One feature-space run on pixels:8 that trains and saves its probe."""
    out = tmp_path_factory.mktemp("perturb")
    argv = [*_base("pixels:8", digits_cache), "--eps", "0,0.05,0.2", "--eps-rel",
            "--c-grid", "1,10", "--json", out / "r.json", "--plot", out / "r.png",
            "--save-probe", out / "probe.npz"]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = main(["perturb", *map(str, argv)])
    finally:
        torch.set_num_threads(before)
    assert code == 0
    return out, json.loads((out / "r.json").read_text())


def test_feature_space_record_and_plot(pixels_run, digits_cache):
    from probes.linear import evaluate_linear_probe, fit_linear_probe

    out, record = pixels_run
    assert record["task"] == "perturb" and record["model"] == "pixels:8"
    assert record["dataset"] == "digits" and record["features"] == "visual"
    assert set(record["metrics"]) == {"clean_top1", "sweep"}
    load = {s: featkit.load("pixels:8", "digits", s, "visual", cache_dir=digits_cache)
            for s in ("train", "val", "test")}
    fit = fit_linear_probe(load["train"].features, load["train"].labels, load["val"].features,
                           load["val"].labels, class_names=load["train"].class_names,
                           c_grid=[1.0, 10.0], tol=1e-6, progress=False)
    expected = evaluate_linear_probe(fit, load["test"].features, load["test"].labels).top1
    assert record["metrics"]["clean_top1"] == pytest.approx(expected, abs=1e-12)
    assert record["probe"]["source"] == "trained" and record["probe"]["C"] == fit.C

    sweep = record["metrics"]["sweep"]
    assert [set(r) >= {"eps", "top1", "success_rate", "mean_delta_norm"} for r in sweep] == [True] * 3
    scale = np.mean(np.abs(load["test"].features.astype(np.float64)).max(axis=1))
    assert record["settings"]["eps_scale"] == pytest.approx(scale)
    assert [r["eps_rel"] for r in sweep] == pytest.approx([0.0, 0.05, 0.2])
    assert [r["eps"] for r in sweep] == pytest.approx([0.0, 0.05 * scale, 0.2 * scale])
    assert sweep[0]["top1"] == record["metrics"]["clean_top1"]
    assert sweep[2]["top1"] < sweep[1]["top1"] < sweep[0]["top1"]
    assert all(r["max_delta_norm"] <= r["eps"] + 1e-6 for r in sweep)
    settings = record["settings"]
    assert settings["space"] == "feature" and settings["norm"] == "linf"
    assert settings["eps_mode"] == "relative" and settings["split"] == "test"
    assert record["provenance"]["split"] == "test"
    assert (out / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "probe.npz").is_file()


def test_reusing_the_saved_probe_gives_the_same_sweep(pixels_run, digits_cache, tmp_path, capsys):
    out, first = pixels_run
    code, stdout, _ = run_cli(capsys, *_base("pixels:8", digits_cache), "--eps", "0,0.05,0.2",
                              "--eps-rel", "--probe", out / "probe.npz", "--json",
                              tmp_path / "again.json")
    assert code == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["metrics"] == first["metrics"]
    assert again["probe"]["source"] == str(out / "probe.npz")
    assert "clean top-1" in stdout and "success %" in stdout


def test_default_budgets_are_relative_in_feature_space(pixels_run, digits_cache, tmp_path, capsys):
    out, _ = pixels_run
    code, stdout, _ = run_cli(capsys, *_base("pixels:8", digits_cache), "--probe",
                              out / "probe.npz", "--norm", "l2", "--target", "least-likely",
                              "--steps", "3", "--json", tmp_path / "d.json")
    assert code == 0
    record = json.loads((tmp_path / "d.json").read_text())
    assert record["settings"]["eps_mode"] == "relative" and record["settings"]["norm"] == "l2"
    assert [r["eps_rel"] for r in record["metrics"]["sweep"]] == pytest.approx(
        [0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2])
    assert record["settings"]["target"] == "least-likely"
    assert "fractions of mean ||x||_2" in stdout


def test_image_space_through_the_tiny_clip(digits_cache, tmp_path, capsys):
    feature_json, image_json = tmp_path / "f.json", tmp_path / "i.json"
    common = [*_base("test:tiny-clip", digits_cache), "--c-grid", "10"]
    assert run_cli(capsys, *common, "--eps", "0", "--json", feature_json,
                   "--save-probe", tmp_path / "p.npz")[0] == 0
    code, stdout, err = run_cli(capsys, *common, "--space", "image", "--probe",
                                tmp_path / "p.npz", "--eps", "0,8/255", "--steps", "2",
                                "--batch-size", "150", "--json", image_json)
    assert code == 0, err
    image, feature = json.loads(image_json.read_text()), json.loads(feature_json.read_text())
    assert image["settings"]["space"] == "image"
    assert image["settings"]["eps_units"] == "pixels in [0, 1]"
    assert image["consistency"]["max_abs_diff"] <= 1e-5
    assert image["metrics"]["clean_top1"] == feature["metrics"]["clean_top1"]
    assert image["consistency"]["cached_clean_top1"] == feature["metrics"]["clean_top1"]
    attacked = image["metrics"]["sweep"][1]
    assert attacked["eps"] == pytest.approx(8 / 255)
    assert attacked["max_delta_norm"] <= 8 / 255 + 1e-6
    assert -1e-6 <= attacked["pixel_range"][0] and attacked["pixel_range"][1] <= 1 + 1e-6
    assert attacked["top1"] < image["metrics"]["clean_top1"]
    assert "eps*255" in stdout


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--space", "image", "--eps-rel"], "--eps-rel applies to --space feature"),
        (["--eps", "0,abc"], "--eps entry 'abc' is not a number"),
        (["--eps", "-1"], "non-negative"),
        (["--alpha", "0.1,0.2"], "--alpha takes one value"),
    ],
)
def test_bad_options_are_one_line_errors(digits_cache, capsys, extra, message):
    code, _, err = run_cli(capsys, *_base("pixels:8", digits_cache), *extra)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_probe_of_other_features_is_rejected(pixels_run, digits_cache, capsys):
    out, _ = pixels_run
    code, _, err = run_cli(capsys, *_base("test:tiny-clip", digits_cache), "--probe",
                           out / "probe.npz")
    assert code == 2 and "takes 192-d features" in err


def test_a_saved_record_can_be_replotted(pixels_run, tmp_path):
    from probes.perturb_plot import plot_sweep

    _, record = pixels_run
    path = plot_sweep(record, tmp_path / "again.png", title="replot")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
