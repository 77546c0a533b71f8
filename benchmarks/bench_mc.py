"""Multiple-choice option log-likelihoods: the shared prefix (KV cache reused) vs one full
forward per option, 5 options per question, CPU, fp32.

Models: ``test:tiny-llava`` (the tiny LLaVA of the tests: CLIP tower 16 px -> 16 image tokens,
2-layer Llama of width 48) and, unless ``--tiny-only``, a small LLaVA built from a config (CLIP
tower 224 px / patch 14 -> 256 image tokens, width 256, 4 layers; Llama width 512, 4 layers,
32,000-token vocabulary; random weights), closer to a real VLM's balance of image and text.

Questions: ``--questions`` random images, each with 5 CUB class names as options (featkit's
clean list), in ``featkit mc build``'s prompt (question, lettered options, instruction).

- shared: :meth:`extractors.option_scoring.OptionScorer.score`: image + question once with a KV
  cache, the cache repeated for the 5 options, one batched forward over the option tokens;
  and :meth:`~extractors.option_scoring.OptionScorer.score_batch` with 8 questions per forward
  (what ``featkit mc score`` runs, ``--batch-size 8``);
- naive: :meth:`OptionScorer.score_naive`: one full forward (vision tower, prompt, option) per
  option, logits only where the option is scored;
- batched: the 5 full sequences (prompt + option, right-padded) in one forward, for reference.

Times: the paths alternate, ``--rounds`` times, over the same questions (the tokenisation and
image processing of each question is part of every path), one torch thread by default;
best and median per-round ratios.
Scores: the largest absolute difference from the naive loop.

    PYTHONPATH=. python3 benchmarks/bench_mc.py [--questions 8] [--rounds 5] [--tiny-only]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

SMALL = {"image_size": 224, "patch_size": 14, "vision_hidden": 256, "vision_layers": 4,
         "text_hidden": 512, "text_layers": 4, "vocab_size": 32000}


def questions(n: int, size: int, seed: int = 0):
    """(image, prompt, options) triples in the prompt format of ``featkit mc build``."""
    from PIL import Image

    from featkit.classnames import dataset_entry
    from featkit.tasks.mc import INSTRUCTION, QUESTION

    rng = np.random.default_rng(seed)
    names = dataset_entry("cub").classes
    out = []
    for _ in range(n):
        options = [names[i] for i in rng.choice(len(names), 5, replace=False)]
        prompt = "\n".join([QUESTION.format(noun="bird"),
                            *(f"{c}. {o}" for c, o in zip("ABCDE", options)), INSTRUCTION])
        image = Image.fromarray(rng.integers(0, 256, (size + 13, size + 7, 3), dtype=np.uint8))
        out.append((image, prompt, options))
    return out


def batched(scorer, image, text, options):
    """All options as full sequences (prompt + option) in one forward."""
    import torch

    prompt = scorer.prompt(text)
    inputs = scorer.prefix_inputs(image, prompt)
    ids = scorer.option_ids(prompt, options)
    width = max(len(i) for i in ids)
    prefix = inputs["input_ids"][0].tolist()
    rows = torch.tensor([prefix + i + [scorer.pad_id] * (width - len(i)) for i in ids])
    mask = torch.tensor([[1] * (len(prefix) + len(i)) + [0] * (width - len(i)) for i in ids])
    k = len(ids)
    with torch.inference_mode():
        logits = scorer.model(input_ids=rows, attention_mask=mask,
                              pixel_values=inputs["pixel_values"].expand(k, -1, -1, -1),
                              use_cache=False, logits_to_keep=width + 1).logits.float()
        out = []
        for row, option in enumerate(ids):
            picked = torch.log_softmax(logits[row, :len(option)], dim=-1).gather(
                1, torch.tensor(option)[:, None])
            out.append(float(picked.double().sum()))
    return np.array(out)


def measure(name: str, scorer, items, rounds: int) -> None:
    paths = {
        "shared": lambda: [scorer.score(*q).logprob for q in items],
        "shared8": lambda: [r.logprob for s in range(0, len(items), 8)
                            for r in scorer.score_batch(items[s:s + 8])],
        "naive": lambda: [scorer.score_naive(*q).logprob for q in items],
        "batched": lambda: [batched(scorer, *q) for q in items],
    }
    results = {path: run() for path, run in paths.items()}  # warm up, and the scores
    diff = max(float(np.abs(a - b).max()) for path in ("shared", "shared8")
               for a, b in zip(results[path], results["naive"]))
    diff_batched = max(float(np.abs(a - b).max())
                       for a, b in zip(results["batched"], results["naive"]))
    times: dict[str, list[float]] = {path: [] for path in paths}
    for _ in range(rounds):
        for path, run in paths.items():
            start = time.perf_counter()
            run()
            times[path].append(time.perf_counter() - start)
    per_question = {p: 1e3 * statistics.median(t) / len(items) for p, t in times.items()}
    prompt_tokens = len(scorer.tokenizer(scorer.prompt(items[0][1]))["input_ids"])
    print(f"{name}: {len(items)} questions x 5 options, prompt {prompt_tokens} text tokens; "
          f"median per question: shared {per_question['shared']:.1f} ms (8 questions per "
          f"forward: {per_question['shared8']:.1f} ms), naive {per_question['naive']:.1f} ms, "
          f"batched {per_question['batched']:.1f} ms")
    for shared, label in (("shared", "one question per forward"),
                          ("shared8", "8 questions per forward")):
        for other in ("naive", "batched"):
            ratios = [o / s for o, s in zip(times[other], times[shared])]
            print(f"  {other} / shared ({label}): {statistics.median(ratios):.2f}x (median of "
                  f"{rounds} rounds), {min(times[other]) / min(times[shared]):.2f}x best to best")
    print(f"  largest |shared - naive| log-likelihood: {diff:.2e} (batched - naive: "
          f"{diff_batched:.2e})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tiny-only", action="store_true")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: tiny models lose more to thread hand-offs "
                        "than they gain, as in the tests; 0: torch's default)")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from extractors import load_extractor
    from extractors.option_scoring import OptionScorer
    from extractors.tiny import build_tiny_llava

    tiny = OptionScorer(load_extractor("test:tiny-llava"))
    measure("test:tiny-llava", tiny, questions(args.questions, 16), args.rounds)
    if not args.tiny_only:
        with tempfile.TemporaryDirectory() as root:
            path = build_tiny_llava(Path(root) / "small-llava", seed=0, **SMALL)
            small = OptionScorer(load_extractor(f"hf:{path}"))
            measure("small LLaVA (256 image tokens, 512-wide LM, 32k vocabulary)", small,
                    questions(args.questions, SMALL["image_size"]), args.rounds)


if __name__ == "__main__":
    main()
