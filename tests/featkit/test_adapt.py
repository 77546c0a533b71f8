"""featkit adapt: InfoNCE against the naive formula, GradCache and 2-process gradients against one
process with the whole batch, learning on a tiny caption task, adapter -> extract round trip,
resume after SIGKILL, pair readers."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from extractors import load_extractor  # noqa: E402
from featkit.adapt import gradcache  # noqa: E402
from featkit.adapt.checkpoints import latest_checkpoint  # noqa: E402
from featkit.adapt.config import AdaptConfig  # noqa: E402
from featkit.adapt.data import (  # noqa: E402
    CAPTION_QUERY,
    VQA_INSTRUCTION,
    caption_pairs,
    read_pairs_jsonl,
    vqa_pairs,
)
from featkit.adapt.loss import info_nce  # noqa: E402
from featkit.adapt.train import (  # noqa: E402
    PairBatcher,
    adapt,
    batch_indices,
    compute_gradients,
    suggested_extract_command,
)
from featkit.datasets import Sample, open_dataset  # noqa: E402
from featkit.errors import FeatkitError  # noqa: E402
from featkit.testing.datasets import class_image, make_cub  # noqa: E402
from tests.featkit.adapt_dist_worker import GLOBAL_INDICES, lora_encoder  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
WORKER = str(Path(__file__).with_name("adapt_dist_worker.py"))


@pytest.fixture(scope="module")
def cub(tmp_path_factory):
    """A generated CUB: 4 classes, 4 train images each after the val carve (16 caption pairs)."""
    return make_cub(tmp_path_factory.mktemp("cub"), n_classes=4, train_per_class=5, test_per_class=1)


@pytest.fixture(scope="module")
def pairs(cub):
    return caption_pairs(open_dataset("cub", cub.root), "train")


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **extra}


def _take_grads(peft_model) -> dict[str, torch.Tensor]:
    grads = {}
    for name, parameter in peft_model.named_parameters():
        if parameter.requires_grad:
            grads[name] = parameter.grad.detach().clone()
            parameter.grad = None
    return grads


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


# -- the loss -----------------------------------------------------------------------------------


def _naive_info_nce(q: np.ndarray, t: np.ndarray, tau: float, ids=None, symmetric=False) -> float:
    """Textbook InfoNCE, one term at a time in float64 (duplicates of the positive skipped)."""
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    t = t / np.linalg.norm(t, axis=1, keepdims=True)

    def direction(a, b):
        total = 0.0
        for i in range(len(a)):
            negatives = [j for j in range(len(b)) if j == i or ids is None or ids[j] != ids[i]]
            denominator = sum(math.exp(float(a[i] @ b[j]) / tau) for j in negatives)
            total += -math.log(math.exp(float(a[i] @ b[i]) / tau) / denominator)
        return total / len(a)

    forward = direction(q, t)
    return (forward + direction(t, q)) / 2 if symmetric else forward


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("tau", [0.02, 0.5])
def test_info_nce_equals_the_naive_formula(symmetric, tau):
    rng = np.random.default_rng(3)
    q, t = rng.normal(size=(7, 5)), rng.normal(size=(7, 5))
    ids = np.array([0, 1, 0, 2, 3, 1, 4])
    for target_ids in (None, ids):
        out = info_nce(torch.as_tensor(q), torch.as_tensor(t), temperature=tau, symmetric=symmetric,
                       target_ids=None if target_ids is None else torch.as_tensor(target_ids))
        expected = _naive_info_nce(q, t, tau, target_ids, symmetric)
        assert abs(float(out.loss) - expected) <= 1e-5 * max(1.0, abs(expected))
    # accuracy: own target ranked first among unmasked targets
    scores = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (t / np.linalg.norm(t, axis=1, keepdims=True)).T
    assert info_nce(torch.as_tensor(q), torch.as_tensor(t)).accuracy == pytest.approx(np.mean(scores.argmax(1) == np.arange(7)))


def test_info_nce_masks_duplicates_and_checks_shapes():
    q = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    same_target = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    unmasked = info_nce(q, same_target, temperature=0.1)
    masked = info_nce(q, same_target, temperature=0.1, target_ids=torch.tensor([0, 0, 1]))
    assert float(unmasked.loss) > 0.4  # two identical targets: at least log(2) for two rows
    assert float(masked.loss) < 1e-3 and masked.accuracy == 1.0
    with pytest.raises(ValueError):
        info_nce(q, q[:2])


# -- pairs ----------------------------------------------------------------------------------------


def test_caption_and_vqa_builders(cub, pairs):
    dataset = open_dataset("cub", cub.root)
    assert len(pairs) == len(dataset.samples("train")) == 16
    assert pairs.pairs[0].query == CAPTION_QUERY
    assert {p.target for p in pairs.pairs} == {f"a photo of a {n.replace('_', ' ')}." for n in cub.class_names}
    assert "a photo of a Black footed Albatross." in {p.target for p in pairs.pairs}
    vqa = vqa_pairs(dataset, "train")
    assert vqa.pairs[0].query == f"{VQA_INSTRUCTION} What is the species of the bird?"
    assert {p.target for p in vqa.pairs} == {n.replace("_", " ") for n in cub.class_names}
    assert caption_pairs(dataset, "val", template="The object species is {}.").pairs[0].target.startswith("The object species is ")
    assert pairs.target_ids().tolist() == [sorted({p.target for p in pairs.pairs}, key=[p.target for p in pairs.pairs].index).index(p.target) for p in pairs.pairs]

    class Digits:  # the digits template, without loading scikit-learn's digits
        name, class_names = "digits", ["0", "1"]

        def samples(self, split):
            return [Sample("d1", 1, 1)]

    assert caption_pairs(Digits()).pairs[0].target == "a photo of the digit 1."


def test_jsonl_bad_rows_are_reported_with_line_numbers(tmp_path):
    class_image(0, 0).save(tmp_path / "a.png")
    rows = [
        json.dumps({"image": "a.png", "query": "What bird is this?", "target": "an albatross"}),
        "{not json",
        json.dumps({"query": "q", "target": "t"}),
        json.dumps({"image": "a.png", "query": "q", "target": "  "}),
        "",
        json.dumps({"image": "missing.png", "query": "q", "target": "t"}),
        json.dumps({"image": "a.png", "query": "", "target": "t"}),
        json.dumps({"image": str(tmp_path / "a.png"), "target": "a caption"}),
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(FeatkitError) as err:
        read_pairs_jsonl(path)
    message = str(err.value)
    assert "\n" not in message and "5 bad row(s)" in message
    for line, problem in [(2, "not valid JSON"), (3, "'image'"), (4, "'target'"), (6, "image not found"), (7, "'query'")]:
        assert f"pairs.jsonl:{line}: {problem}" in message
    good = read_pairs_jsonl(path, skip_bad_rows=True)
    assert len(good) == 2 and len(good.skipped) == 5
    assert good.pairs[0].query == f"{VQA_INSTRUCTION} What bird is this?"
    assert good.pairs[0].line == 1 and good.pairs[0].image == str(tmp_path / "a.png")
    assert good.pairs[1].query == CAPTION_QUERY  # no query: the caption query
    assert read_pairs_jsonl(path, skip_bad_rows=True, instruction="").pairs[0].query == "What bird is this?"
    assert good.load_image(0).size == (32, 32)


def test_cli_reports_bad_pairs_and_missing_arguments(tmp_path, capsys):
    from featkit.cli import main

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"image": "nope.png", "query": "q", "target": "t"}) + "\n")
    assert main(["adapt", "--model", "test:tiny-llava", "--pairs", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "bad.jsonl:1: image not found" in capsys.readouterr().err
    assert main(["adapt", "--model", "test:tiny-llava", "--out", str(tmp_path / "o")]) == 2
    assert "--dataset D --task" in capsys.readouterr().err
    assert main(["adapt", "--model", "test:tiny-llava", "--dataset", "digits", "--task", "vqa", "--batch-size", "1",
                 "--out", str(tmp_path / "o")]) == 2
    assert "--batch-size must be at least 2" in capsys.readouterr().err


def test_batches_are_embedded_like_extraction(pairs):
    """Training embeds queries and targets exactly as ``last_token`` extraction and
    ``embed_texts`` do (same prompt, image processing and pooling)."""
    for model in ("test:tiny-llava", "test:tiny-qwen2vl"):
        extractor = load_extractor(model)
        indices = [0, 5, 10, 15]
        query_inputs, target_inputs = PairBatcher.for_extractor(pairs, extractor).encode(indices)
        pixels = torch.stack([extractor.transform(pairs.load_image(i)) for i in indices])
        extracted = extractor(pixels, ["last_token"])["last_token"]
        assert float((extractor.last_token(query_inputs) - extracted).abs().max()) <= 1e-5, model
        texts = extractor.embed_texts([pairs.pairs[i].target for i in indices])
        assert np.abs(extractor.last_token(target_inputs).numpy() - texts).max() <= 1e-5, model


def test_default_lora_targets_are_the_language_model_only():
    for model in ("test:tiny-llava", "test:tiny-qwen2vl"):
        _, peft_model = lora_encoder(model)
        adapted = {name.rsplit(".lora_A", 1)[0] for name, _ in peft_model.named_parameters() if ".lora_A." in name}
        assert adapted and all(".language_model.layers." in name for name in adapted), model
        leaves = {name.rsplit(".", 1)[-1] for name in adapted}
        assert leaves == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    _, peft_model = lora_encoder("test:tiny-llava", lora_targets="q_proj,v_proj")
    names = [n for n, _ in peft_model.named_parameters() if ".lora_A." in n]
    assert any("vision_tower" in n for n in names) and any("language_model" in n for n in names)


# -- gradients --------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["test:tiny-llava", "test:tiny-qwen2vl"])
def test_gradcache_chunks_give_the_full_batch_gradients(pairs, model):
    encoder, peft_model = lora_encoder(model)
    indices = GLOBAL_INDICES
    full = compute_gradients(encoder, PairBatcher.for_extractor(pairs, encoder.extractor)(indices), symmetric=True)
    reference = _take_grads(peft_model)
    chunked = compute_gradients(encoder, PairBatcher.for_extractor(pairs, encoder.extractor, 3)(indices), symmetric=True)
    assert abs(float(full.loss) - float(chunked.loss)) <= 1e-6 and full.accuracy == chunked.accuracy
    assert min(float(g.abs().max()) for g in reference.values()) > 1e-4  # every LoRA matrix gets gradient
    assert _max_diff(_take_grads(peft_model), reference) <= 1e-5


def test_gradient_checkpointing_keeps_the_gradients(pairs):
    batches = {}
    for checkpointing in (True, False):
        encoder, peft_model = lora_encoder(gradient_checkpointing=checkpointing)
        batch = PairBatcher.for_extractor(pairs, encoder.extractor, 4)(GLOBAL_INDICES)
        layers = [m for m in encoder.extractor.model.modules() if hasattr(m, "gradient_checkpointing")]
        assert layers and all(m.gradient_checkpointing == checkpointing for m in layers)
        compute_gradients(encoder, batch)
        batches[checkpointing] = _take_grads(peft_model)
    assert _max_diff(batches[True], batches[False]) <= 1e-6


def test_gradcache_replays_dropout_masks(pairs, monkeypatch):
    """With LoRA dropout, GradCache equals backpropagating the chunks' own graphs (same masks);
    without restoring the RNG state before each replay it would not."""
    encoder, peft_model = lora_encoder(lora_dropout=0.3)
    batch = PairBatcher.for_extractor(pairs, encoder.extractor, 3)(GLOBAL_INDICES)
    torch.manual_seed(5)
    cached = compute_gradients(encoder, batch)
    cached_grads = _take_grads(peft_model)
    torch.manual_seed(5)
    embedded = [encoder(*chunk) for chunk in batch.chunks]
    reference = info_nce(torch.cat([q for q, _ in embedded]), torch.cat([t for _, t in embedded]),
                         target_ids=batch.target_ids)
    reference.loss.backward()
    reference_grads = _take_grads(peft_model)
    assert abs(float(cached.loss) - reference.loss.item()) <= 1e-6
    assert _max_diff(cached_grads, reference_grads) <= 1e-5
    monkeypatch.setattr(gradcache, "set_rng_state", lambda *args, **kwargs: None)
    torch.manual_seed(5)
    compute_gradients(encoder, batch)
    assert _max_diff(_take_grads(peft_model), reference_grads) > 1e-4


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_gloo_processes_give_the_one_process_gradients(cub, pairs, tmp_path):
    """Two processes with torchrun's environment (launched directly: torchrun's own launcher
    would be a third torch import on a busy CPU)."""
    out = tmp_path / "grads.pt"
    port = str(_free_port())
    procs = [
        subprocess.Popen([sys.executable, WORKER, "grads", str(cub.root), str(out)],
                         env=_env(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                                  MASTER_ADDR="127.0.0.1", MASTER_PORT=port),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for rank in range(2)
    ]
    # the single-process reference runs while the workers start
    encoder, peft_model = lora_encoder(double=True)
    single = compute_gradients(encoder, PairBatcher.for_extractor(pairs, encoder.extractor)(GLOBAL_INDICES), symmetric=True)
    reference = _take_grads(peft_model)
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    ranks = [torch.load(f"{out}.rank{r}", weights_only=True) for r in range(2)]
    for rank in ranks:
        assert _max_diff(rank["grads"], reference) <= 1e-6
    assert (ranks[0]["loss"] + ranks[1]["loss"]) / 2 == pytest.approx(float(single.loss), abs=1e-6)
    assert (ranks[0]["accuracy"] + ranks[1]["accuracy"]) / 2 == pytest.approx(single.accuracy)


# -- training ---------------------------------------------------------------------------------------


def _retrieval(extractor, pairs) -> tuple[float, float]:
    """InfoNCE loss and top-1 accuracy with all training pairs as one batch (eval mode)."""
    query, target = PairBatcher.for_extractor(pairs, extractor).encode(range(len(pairs)))
    with torch.no_grad():
        out = info_nce(extractor.last_token(query), extractor.last_token(target),
                       target_ids=torch.as_tensor(pairs.target_ids()))
    return float(out.loss), out.accuracy


TRAIN = AdaptConfig(steps=30, batch_size=8, lr=1e-3, save_every=10)


@pytest.fixture(scope="module")
def trained(pairs, tmp_path_factory):
    out = tmp_path_factory.mktemp("adapt") / "caption"
    return adapt("test:tiny-llava", pairs, out, config=TRAIN, device="cpu", progress=False)


def test_loss_falls_and_training_pairs_are_retrieved(trained, pairs):
    before_loss, before_accuracy = _retrieval(load_extractor("test:tiny-llava"), pairs)
    after_loss, after_accuracy = _retrieval(trained.extractor, pairs)
    assert after_loss < 0.5 * before_loss
    assert after_accuracy >= 0.9 and after_accuracy > before_accuracy + 0.3
    log = json.loads(trained.log_path.read_text())
    losses = [row["loss"] for row in log["log"]]
    assert len(losses) == 30 and np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])
    assert log["finished"] and log["settings"]["temperature"] == 0.02 and log["global_batch"] == 8
    warmup = math.ceil(0.03 * 30)
    expected_lr = [1e-3 * (s / warmup if s < warmup else (30 - s) / (30 - warmup)) for s in range(30)]
    assert [row["lr"] for row in log["log"]] == pytest.approx(expected_lr)
    assert trained.plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (trained.adapter / "checkpoints").exists()


def test_adapter_directory_extracts_like_the_in_memory_model(trained, cub, tmp_path):
    from featkit import load
    from featkit.extraction import extract

    config = json.loads((trained.adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "test:tiny-llava" and config["r"] == 16
    extract("test:tiny-llava", "cub", data_root=cub.root, splits=["val"], features=["last_token"],
            adapter=trained.adapter, cache_dir=tmp_path, progress=False, num_workers=0)
    features = load("test:tiny-llava", "cub", "val", "last_token", cache_dir=tmp_path, adapter=trained.adapter)
    dataset = open_dataset("cub", cub.root)
    by_id = {s.sample_id: s for s in dataset.samples("val")}
    extractor = trained.extractor
    pixels = torch.stack([extractor.transform(dataset.load_image(by_id[i])) for i in features.sample_ids])
    in_memory = extractor(pixels, ["last_token"])["last_token"].numpy()
    assert np.abs(features.features - in_memory).max() <= 1e-5
    base = load_extractor("test:tiny-llava")(pixels, ["last_token"])["last_token"].numpy()
    assert np.abs(features.features - base).max() > 1e-2  # the adapter changed the embeddings
    with pytest.raises(FeatkitError):  # its own cache key: no adapter, no file
        load("test:tiny-llava", "cub", "val", "last_token", cache_dir=tmp_path)


def test_resume_after_kill_continues_from_the_checkpoint(cub, pairs, tmp_path):
    out = tmp_path / "killed"
    args = ["adapt", "--model", "test:tiny-llava", "--dataset", "cub", "--data-root", str(cub.root),
            "--task", "caption", "--steps", "6", "--batch-size", "4", "--save-every", "2", "--lr", "1e-3",
            "--out", str(out), "--no-progress", "--device", "cpu"]
    killed = subprocess.run([sys.executable, WORKER, "cli", *args], env=_env(FEATKIT_TEST_KILL_AT_STEP="5"),
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert latest_checkpoint(out).name == "step-000004"
    assert not (out / "adapter_config.json").exists()
    config = AdaptConfig(steps=6, batch_size=4, save_every=2, lr=1e-3)
    with pytest.raises(FeatkitError, match="lr"):
        adapt("test:tiny-llava", pairs, out, config=AdaptConfig(steps=6, batch_size=4, save_every=2, lr=2e-3),
              device="cpu", progress=False)
    resumed = adapt("test:tiny-llava", pairs, out, config=config, device="cpu", progress=False)
    assert resumed.resumed_from == 4 and resumed.steps_run == 2
    straight = adapt("test:tiny-llava", pairs, tmp_path / "straight", config=config, device="cpu", progress=False)
    resumed_log = json.loads(resumed.log_path.read_text())["log"]
    straight_log = json.loads(straight.log_path.read_text())["log"]
    assert [row["step"] for row in resumed_log] == list(range(1, 7))
    assert [row["loss"] for row in resumed_log] == pytest.approx([row["loss"] for row in straight_log], abs=1e-6)
    from safetensors.torch import load_file

    a, b = load_file(out / "adapter_model.safetensors"), load_file(tmp_path / "straight" / "adapter_model.safetensors")
    assert _max_diff(a, b) <= 1e-6
    again = adapt("test:tiny-llava", pairs, out, config=config, device="cpu", progress=False)
    assert again.already_trained and again.steps_run == 0


def test_cli_reports_a_finished_run_and_how_to_extract_with_it(trained, cub, capsys):
    from featkit.cli import main

    args = ["adapt", "--model", "test:tiny-llava", "--dataset", "cub", "--data-root", str(cub.root), "--task",
            "caption", "--steps", "30", "--batch-size", "8", "--lr", "1e-3", "--save-every", "10",
            "--out", str(trained.adapter), "--no-progress", "--device", "cpu"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "already holds this adapter" in out
    assert f"featkit extract --model test:tiny-llava --dataset cub --data-root {cub.root} --adapter {trained.adapter} --features last_token" in out
    vqa = dataclasses.replace(trained, extraction_instruction=f"{VQA_INSTRUCTION} What is the species of the bird?")
    assert suggested_extract_command("m", "cub", vqa).endswith(
        "--instruction 'Represent the given image with the following question: What is the species of the bird?'")


def test_batch_order_is_a_function_of_seed_and_step():
    first = [batch_indices(s, 10, 4, seed=0) for s in range(4)]
    assert [batch_indices(s, 10, 4, seed=0).tolist() for s in range(4)] == [b.tolist() for b in first]
    assert len(set(np.concatenate(first[:2]).tolist())) == 8  # an epoch draws without replacement
    with pytest.raises(FeatkitError, match="lower --batch-size"):
        batch_indices(0, 3, 4, seed=0)
