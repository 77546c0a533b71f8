"""last_token extraction: featkit's path vs the VLM2Vec-style bare loop, same batches, same run.

The model is a small LLaVA built from a config (CLIP tower 112 px / patch 14 -> 64 image tokens,
width 256, 4 layers; Llama LM width 512, 4 layers, 32,000-token vocabulary), random weights, CPU,
fp32. Its LM head (512 x 32,000) is large next to the rest, as the vocabulary-sized head is in
real VLMs' memory budgets.

featkit   ``extractor(pixels, ["last_token"])``: the base model without the LM head and without
          a KV cache, last non-padding token from the attention mask, L2-normalised.
baseline  what VLM2Vec does: ``model(**inputs, output_hidden_states=True)`` (LM head, logits, all
          hidden states, default KV cache), then ``hidden_states[-1]`` at the last token.

Both get the same pre-processed pixel batches and prompt ids. Time: alternating repeats, best
and median per path (the machine is shared, so best-of is the steadier figure). Peak memory: each path in its own subprocess: load the model, touch every weight, prepare
the batches, reset the kernel's peak-RSS mark, run the path once; report that peak and its rise
over the RSS before the run.

    PYTHONPATH=. python3 benchmarks/bench_last_token.py [--images 64] [--batch-size 16] [--repeats 5] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _measure import reset_peak

MODEL = {"image_size": 112, "patch_size": 14, "vision_hidden": 256, "vision_layers": 4,
         "text_hidden": 512, "text_layers": 4, "vocab_size": 32000}


def build_model(root: Path) -> Path:
    from extractors.tiny import build_tiny_llava

    return build_tiny_llava(root / "small-llava", seed=0, **MODEL)


def prepare(model_dir: Path, n_images: int, batch_size: int):
    """The loaded featkit extractor and the pixel batches every path consumes."""
    import numpy as np
    import torch
    from PIL import Image

    from extractors import load_extractor

    extractor = load_extractor(f"hf:{model_dir}")
    rng = np.random.default_rng(0)
    images = [Image.fromarray((rng.random((120 + i % 17, 130, 3)) * 255).astype("uint8")) for i in range(n_images)]
    pixels = torch.stack([extractor.transform(image) for image in images])
    return extractor, list(pixels.split(batch_size))


def run_featkit(extractor, batches):
    import torch

    with torch.inference_mode():
        return torch.cat([extractor(batch, ["last_token"])["last_token"] for batch in batches])


def run_baseline(extractor, batches):
    """VLM2Vec-style: the full model with its LM head and all hidden states."""
    import torch

    model = extractor.model
    rows = []
    with torch.inference_mode():
        for batch in batches:
            ids = extractor._prompt_ids.expand(len(batch), -1)
            mask = torch.ones_like(ids)
            out = model(input_ids=ids, attention_mask=mask, pixel_values=batch, output_hidden_states=True)
            last = mask.sum(dim=1) - 1
            hidden = out.hidden_states[-1][torch.arange(len(batch)), last]
            rows.append(torch.nn.functional.normalize(hidden.float(), dim=-1))
    return torch.cat(rows)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_bytes() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(path: str, model_dir: str, n_images: int, batch_size: int) -> None:
    """Run one path once in a fresh process and print its memory use as JSON."""
    extractor, batches = prepare(Path(model_dir), n_images, batch_size)
    for parameter in extractor.model.parameters():  # fault in lazily mapped weights first
        parameter.sum()
    reset = reset_peak()
    before = _rss_bytes()
    (run_featkit if path == "featkit" else run_baseline)(extractor, batches)
    print(json.dumps({"path": path, "rss_before": before, "peak": _peak_bytes(), "peak_reset": reset}))


def measure_peak(path: str, model_dir: Path, n_images: int, batch_size: int) -> dict:
    cmd = [sys.executable, __file__, "--child", path, "--model-dir", str(model_dir),
           "--images", str(n_images), "--batch-size", str(batch_size)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="16 images, 2 repeats")
    parser.add_argument("--child", choices=["featkit", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.model_dir, args.images, args.batch_size)
        return
    n_images, repeats = (16, 2) if args.quick else (args.images, args.repeats)

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model(Path(tmp))
        extractor, batches = prepare(model_dir, n_images, args.batch_size)
        tokens = extractor._prompt_ids.shape[1]
        ours, theirs = run_featkit(extractor, batches[:1]), run_baseline(extractor, batches[:1])  # warm-up
        max_diff = float((ours - theirs).abs().max())
        times = {"featkit": [], "baseline": []}
        for _ in range(repeats):
            for name, fn in (("featkit", run_featkit), ("baseline", run_baseline)):
                start = time.perf_counter()
                fn(extractor, batches)
                times[name].append(time.perf_counter() - start)
        peaks = {name: measure_peak(name, model_dir, n_images, args.batch_size) for name in times}

    best = {name: min(t) for name, t in times.items()}
    median = {name: statistics.median(t) for name, t in times.items()}
    print(f"small LLaVA {MODEL}; {n_images} images x {tokens} tokens, batch {args.batch_size}, "
          f"{repeats} repeat(s), torch threads {__import__('torch').get_num_threads()}")
    print(f"featkit vs baseline embeddings: max |diff| = {max_diff:.2e}")
    print(f"{'path':<10}{'best s':>9}{'median s':>10}{'img/s':>9}{'peak RSS MB':>13}{'rise MB':>10}")
    for name in ("featkit", "baseline"):
        peak, rise = peaks[name]["peak"] / 2**20, (peaks[name]["peak"] - peaks[name]["rss_before"]) / 2**20
        print(f"{name:<10}{best[name]:>9.3f}{median[name]:>10.3f}{n_images / best[name]:>9.1f}{peak:>13.0f}{rise:>10.0f}")
    rise = {n: max(1, peaks[n]["peak"] - peaks[n]["rss_before"]) for n in peaks}
    if not all(p["peak_reset"] for p in peaks.values()):
        print("note: could not reset the peak-RSS mark; peaks include model loading")
    print(f"time ratio featkit/baseline: best {best['featkit'] / best['baseline']:.2f}, "
          f"median {median['featkit'] / median['baseline']:.2f}  (target <= 1)")
    print(f"peak RSS ratio featkit/baseline: {peaks['featkit']['peak'] / peaks['baseline']['peak']:.2f}  "
          f"(rise over loaded model: {rise['featkit'] / rise['baseline']:.2f}; target < 1)")


if __name__ == "__main__":
    main()
