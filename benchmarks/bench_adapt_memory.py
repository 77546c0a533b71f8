"""Memory and speed of one ``featkit adapt`` training step at batch 64: GradCache chunks vs the
whole batch at once (baseline), same model, same batch, same run.

The model is a small LLaVA built from a config (CLIP tower 64 px / patch 8 -> 64 image tokens,
width 128, 2 layers; Llama LM width 256, 4 layers, char vocabulary), random weights, CPU, fp32,
with featkit's default LoRA (r 16, alpha 64, dropout 0.1 on every LM projection). A step embeds
64 image queries (~95 tokens each) and 64 caption targets, so activations, not the ~4 M weights,
set the memory.

Each configuration runs in its own subprocess: load the model, attach LoRA, prepare the batch,
touch every weight, reset the kernel's peak-RSS mark (VmHWM), then run one full step (forward,
InfoNCE, backward, AdamW); the step's memory is the peak minus the RSS just before it. Then
``--repeats`` more steps are timed: wall-clock steps/s (best and median) and CPU seconds per
step (``process_time`` of the single-threaded run, the steadier figure on a shared machine).
Rows: gradient checkpointing on (featkit's default) and off, each without and with chunking.

    PYTHONPATH=. python3 benchmarks/bench_adapt_memory.py [--batch-size 64] [--chunk-size 8] [--repeats 2] [--threads 1] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _measure import reset_peak, status_bytes

MODEL = {"image_size": 64, "patch_size": 8, "vision_hidden": 128, "vision_layers": 2,
         "text_hidden": 256, "text_layers": 4}
QUICK_MODEL = {"image_size": 32, "patch_size": 8, "vision_hidden": 64, "vision_layers": 2,
               "text_hidden": 128, "text_layers": 2}


def child(model_dir: str, data_root: str, batch_size: int, chunk_size: int, checkpointing: bool, repeats: int,
          threads: int) -> None:
    """One configuration in a fresh process; prints one JSON line."""
    import torch

    from extractors import load_extractor
    from featkit.adapt.config import AdaptConfig
    from featkit.adapt.data import caption_pairs
    from featkit.adapt.train import ContrastiveEncoder, PairBatcher, attach_lora, compute_gradients
    from featkit.datasets import open_dataset

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = AdaptConfig(gradient_checkpointing=checkpointing, chunk_size=chunk_size or None)
    extractor = load_extractor(f"hf:{model_dir}")
    peft_model = attach_lora(extractor, config)
    peft_model.train()
    encoder = ContrastiveEncoder(extractor, peft_model)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr)
    pairs = caption_pairs(open_dataset("cub", data_root), "train")
    batch = PairBatcher.for_extractor(pairs, extractor, config.chunk_size)(list(range(batch_size)))
    tokens = sum(int(q["attention_mask"].sum()) + int(t["attention_mask"].sum()) for q, t in batch.chunks)
    for parameter in extractor.model.parameters():  # fault in every weight page first
        parameter.sum()

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        out = compute_gradients(encoder, batch)
        optimizer.step()
        return float(out.loss)

    reset = reset_peak()
    before = status_bytes("VmRSS")
    started = time.perf_counter()
    loss = step()
    first = time.perf_counter() - started
    peak = status_bytes("VmHWM")
    times, cpu_times = [], []
    for _ in range(repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - started)
        cpu_times.append(time.process_time() - cpu_started)
    print(json.dumps({"rss_before": before, "peak": peak, "peak_reset": reset, "first_step_s": first,
                      "step_s": times, "cpu_s": cpu_times, "loss": loss, "tokens": tokens,
                      "lora_params": sum(p.numel() for p in params),
                      "model_params": sum(p.numel() for p in extractor.model.parameters())}))


def run_child(model_dir: Path, data_root: Path, batch_size: int, chunk_size: int, checkpointing: bool, repeats: int,
              threads: int) -> dict:
    cmd = [sys.executable, __file__, "--child", str(model_dir), str(data_root), str(batch_size), str(chunk_size),
           str(int(checkpointing)), str(repeats), str(threads)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--chunk-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2, help="timed steps after the measured one")
    parser.add_argument("--quick", action="store_true", help="smaller model, batch 16, chunk 4, one timed step")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1: steadier on a shared CPU)")
    parser.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        model_dir, data_root, batch, chunk, checkpointing, repeats, threads = args.child
        child(model_dir, data_root, int(batch), int(chunk), checkpointing == "1", int(repeats), int(threads))
        return
    from extractors.tiny import build_tiny_llava
    from featkit.results import format_table
    from featkit.testing.datasets import make_cub

    model = QUICK_MODEL if args.quick else MODEL
    batch_size, chunk_size, repeats = (16, 4, 1) if args.quick else (args.batch_size, args.chunk_size, args.repeats)
    with tempfile.TemporaryDirectory(prefix="bench-adapt-") as tmp:
        model_dir = build_tiny_llava(Path(tmp) / "small-llava", seed=0, **model)
        per_class = 5
        n_classes = -(-batch_size // (per_class - 1))  # the val carve keeps 4 of 5 per class
        data = make_cub(Path(tmp) / "cub", n_classes=n_classes, train_per_class=per_class, test_per_class=1,
                        image_size=model["image_size"])
        rows, results = [], {}
        for checkpointing in (True, False):
            for chunk in (0, chunk_size):
                result = run_child(model_dir, data.root, batch_size, chunk, checkpointing, repeats, args.threads)
                results[(checkpointing, chunk)] = result
        for (checkpointing, chunk), result in results.items():
            baseline = results[(checkpointing, 0)]
            rise = result["peak"] - result["rss_before"]
            base_rise = baseline["peak"] - baseline["rss_before"]
            best = min(result["step_s"]) if result["step_s"] else result["first_step_s"]
            base_best = min(baseline["step_s"]) if baseline["step_s"] else baseline["first_step_s"]
            rows.append({
                "checkpointing": "on (default)" if checkpointing else "off",
                "chunks": f"{chunk} pairs" if chunk else "whole batch (baseline)",
                "RSS before MB": round(result["rss_before"] / 2**20),
                "step peak rise MB": round(rise / 2**20),
                "rise vs baseline": f"{rise / base_rise:.2f}x",
                "steps/s best": f"{1 / best:.3f}",
                "steps/s median": f"{1 / statistics.median(result['step_s'] or [result['first_step_s']]):.3f}",
                "speed vs baseline": f"{base_best / best:.2f}x",
                "CPU s/step": f"{min(result['cpu_s']):.1f}" if result["cpu_s"] else "-",
                "CPU time vs baseline": f"{min(result['cpu_s']) / min(baseline['cpu_s']):.2f}x" if result["cpu_s"] else "-",
            })
        first = results[(True, 0)]
        print(f"small LLaVA: {first['model_params'] / 1e6:.1f} M weights, LoRA {first['lora_params'] / 1e6:.2f} M; "
              f"batch {batch_size} pairs = {first['tokens']} tokens per step; CPU fp32, {args.threads} thread(s) of "
              f"{os.cpu_count()} cores; "
              f"peak reset: {first['peak_reset']}")
        print(format_table(rows, list(rows[0])))
        target = results[(True, chunk_size)]
        ratio = (target["peak"] - target["rss_before"]) / (first["peak"] - first["rss_before"])
        if args.quick:
            verdict = "smoke size: fixed overheads dominate; the < 0.5x target is for the full run"
        else:
            verdict = ("meets" if ratio < 0.5 else "MISSES") + " the < 0.5x target"
        print(f"\nchunked / whole-batch peak rise at featkit's defaults: {ratio:.2f}x ({verdict})")


if __name__ == "__main__":
    main()
