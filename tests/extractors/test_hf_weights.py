"""``parameters_not_as_saved`` against the saved tensors, in both checkpoint formats and in
shards: a redrawn parameter is named, an untouched or cast one is not."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from extractors.hf_weights import parameters_not_as_saved  # noqa: E402


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(100, 80), torch.nn.LayerNorm(80),
                               torch.nn.Linear(80, 3))


@pytest.mark.parametrize("layout", ["safetensors", "bin", "sharded"])
def test_a_redrawn_parameter_is_named_and_only_it(tmp_path, layout):
    from safetensors.torch import save_file

    model = _model()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if layout == "safetensors":
        save_file(state, str(tmp_path / "model.safetensors"))
    elif layout == "bin":
        torch.save(state, tmp_path / "pytorch_model.bin")
    else:
        names = sorted(state)
        halves = {"model-00001-of-00002.safetensors": names[:3],
                  "model-00002-of-00002.safetensors": names[3:]}
        for file, keys in halves.items():
            save_file({k: state[k] for k in keys}, str(tmp_path / file))
        (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
            {"weight_map": {k: file for file, keys in halves.items() for k in keys}}))
    assert parameters_not_as_saved(model, tmp_path) == []
    with torch.no_grad():
        model[2].weight.normal_()  # redrawn, as a model's own _init_weights would
    assert parameters_not_as_saved(model, tmp_path) == ["2.weight"]
    assert parameters_not_as_saved(model.to(torch.bfloat16), tmp_path) == ["2.weight"]


def test_no_weight_files_means_nothing_to_compare(tmp_path):
    assert parameters_not_as_saved(_model(), tmp_path) == []
