"""The adaptation loop: LoRA on a transformers VLM trained with InfoNCE on last-token embeddings.

Recipe (seed 001 / VLM2Vec): the query is ``"<image-token> <query text>"`` with its image, the
target its text; both are embedded by the hf extractor's own last-token pooling
(:meth:`extractors.hf.HFVLMExtractor.last_token` with a graph), and InfoNCE with in-batch
negatives pulls each query to its target (:mod:`featkit.adapt.loss`). AdamW, linear schedule
with a warm-up ratio, gradient clipping, bf16 weights and autocast on GPU, fp32 on CPU.

Large batches: ``chunk_size`` switches to GradCache (:mod:`featkit.adapt.gradcache`).
Several processes (``torchrun``): each embeds its share of the global batch, embeddings are
all-gathered for the negatives and the LoRA weights are wrapped in DDP; the gradients equal one
process's on the whole batch.

Determinism and resume: the batch of step ``s`` is a pure function of ``(seed, s)`` (a seeded
permutation per epoch) and the dropout generator is re-seeded from ``(seed, s, rank)`` at every
step, so a run resumed from a checkpoint (adapter, optimizer, scheduler, step, log) continues
exactly where it stopped, with any number of processes holding the same global batch.

Outputs in ``out/``: the peft adapter (``adapter_config.json``, ``adapter_model.safetensors``),
``train_log.json`` (settings and per-step loss, accuracy, lr, gradient norm) and ``loss.png``
(:mod:`featkit.adapt.checkpoints` writes them);
``out/checkpoints/step-NNNNNN/`` while training (removed at the end unless kept).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from extractors.base import AdaptableExtractor
from featkit.adapt.checkpoints import (
    CHECKPOINTS,
    LOG_NAME,
    PLOT_NAME,
    checkpoint_run,
    finished_run,
    latest_checkpoint,
    load_checkpoint,
    plot_log,
    run_mismatch,
    save_checkpoint,
    write_log,
)
from featkit.adapt.config import LANGUAGE_MODEL, AdaptConfig
from featkit.adapt.data import PairSet
from featkit.adapt.gradcache import cached_backward
from featkit.adapt.loss import DEFAULT_TEMPERATURE, LossOutput, info_nce
from featkit.errors import FeatkitError

OUTPUT_FILES = ("adapter_config.json", "adapter_model.safetensors", "README.md", LOG_NAME, PLOT_NAME)


#: settings that change the trained weights: a resumed run must match them (chunking, checkpointing
#: and save frequency change memory and time only)
_RUN_IDENTITY_EXCLUDES = ("chunk_size", "gradient_checkpointing", "save_every")


@dataclass
class AdaptResult:
    """What :func:`adapt` did. ``adapter`` is the directory to pass as ``--adapter``;
    ``extractor`` the trained in-memory model (LoRA unmerged, eval mode) on the process that ran."""

    adapter: Path
    log_path: Path
    plot_path: Path | None
    steps: int
    steps_run: int
    resumed_from: int | None
    first_loss: float | None
    final_loss: float | None
    already_trained: bool
    extraction_instruction: str | None
    extractor: Any = field(default=None, repr=False)

    def summary(self) -> dict[str, Any]:
        return {
            "adapter": str(self.adapter),
            "steps": self.steps,
            "steps_run": self.steps_run,
            "resumed_from": self.resumed_from,
            "first_loss": self.first_loss,
            "final_loss": self.final_loss,
            "already_trained": self.already_trained,
        }


# -- model set-up -------------------------------------------------------------------------------


def lora_target_modules(model: torch.nn.Module, targets: str) -> str | list[str]:
    """peft ``target_modules`` for a ``--lora-targets`` value (see :class:`AdaptConfig`)."""
    targets = targets.strip()
    if targets == LANGUAGE_MODEL:
        leaves = sorted({
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and f".{LANGUAGE_MODEL}." in f".{name}"
        })
        if not leaves:
            raise FeatkitError(f"{type(model).__name__} has no linear layers under '{LANGUAGE_MODEL}'; pass --lora-targets")
        return rf"(.*\.)?{LANGUAGE_MODEL}\.(.*\.)?({'|'.join(map(re.escape, leaves))})"
    if targets == "all-linear":
        return "all-linear"
    if targets.startswith("re:"):
        return targets[3:]
    names = [t.strip() for t in targets.split(",") if t.strip()]
    if not names:
        raise FeatkitError("--lora-targets is empty")
    return names


def attach_lora(extractor: Any, config: AdaptConfig, *, init_lora_weights: bool | str = True) -> Any:
    """Wrap the extractor's model in a peft LoRA model (in place: ``extractor.base`` now runs the
    adapters) and return the ``PeftModel``. ``init_lora_weights=False`` gives random B matrices
    (tests want non-zero gradients everywhere)."""
    from peft import LoraConfig, get_peft_model

    model = extractor.model
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=lora_target_modules(model, config.lora_targets),
        bias="none",
        init_lora_weights=init_lora_weights,
    )
    try:
        with warnings.catch_warnings():  # peft asks transformers 5 a deprecated question
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            peft_model = get_peft_model(model, lora)
    except ValueError as err:
        raise FeatkitError(f"--lora-targets {config.lora_targets}: {err}".splitlines()[0]) from None
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return peft_model


def enable_gradient_checkpointing(model: Any) -> None:
    """Non-reentrant activation checkpointing of every transformer layer.

    Non-reentrant checkpointing propagates gradients to LoRA weights inside a layer even though
    the layer's input (frozen embeddings) does not require grad, so peft's
    ``enable_input_require_grads`` work-around for the reentrant variant is not needed; it also
    works under DDP with several forwards before a backward.
    """
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:  # transformers < 5.x
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


class ContrastiveEncoder(torch.nn.Module):
    """``(query_inputs, target_inputs) -> (query, target)`` last-token embeddings with a graph:
    the module DDP wraps (one forward per chunk, both sides)."""

    def __init__(self, extractor: Any, peft_model: torch.nn.Module, autocast_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.peft_model = peft_model
        self.extractor = extractor
        self.autocast_dtype = autocast_dtype

    def forward(self, query_inputs: dict, target_inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        context = contextlib.nullcontext()
        if self.autocast_dtype is not None:
            context = torch.autocast(torch.device(self.extractor.device).type, dtype=self.autocast_dtype)
        with context:
            query = self.extractor.last_token(query_inputs, grad=True)
            target = self.extractor.last_token(target_inputs, grad=True)
        return query, target


# -- batches ------------------------------------------------------------------------------------


@dataclass
class StepBatch:
    """One process's share of a step: chunks of ``(query_inputs, target_inputs)`` processor
    outputs, and the target ids of all its pairs (in chunk order)."""

    chunks: list[tuple[dict, dict]]
    target_ids: torch.Tensor
    indices: list[int]


class PairBatcher:
    """Pair indices -> :class:`StepBatch`: images decoded and processed, prompts tokenised with the
    model's own processor, exactly as the hf extractor prepares its ``last_token`` inputs
    (Qwen2-VL images square-cropped to the extractor's fixed size). Picklable."""

    def __init__(self, pairs: PairSet, processor: Any, image_token: str, square_size: int | None,
                 chunk_size: int | None) -> None:
        self.pairs = pairs
        self.processor = processor
        self.image_token = image_token
        self.square_size = square_size
        self.chunk_size = chunk_size
        self.target_ids = pairs.target_ids()

    @classmethod
    def for_extractor(cls, pairs: PairSet, extractor: AdaptableExtractor,
                      chunk_size: int | None = None) -> PairBatcher:
        return cls(pairs, extractor.processor, extractor.image_token, extractor.square_crop_size, chunk_size)

    def encode(self, indices: Sequence[int]) -> tuple[dict, dict]:
        """Processor inputs of the queries (image + prompt) and targets (text) of ``indices``."""
        from extractors.hf import square_crop

        images = [self.pairs.load_image(i) for i in indices]
        if self.square_size:
            images = [square_crop(image, self.square_size) for image in images]
        prompts = [f"{self.image_token} {self.pairs.pairs[i].query}" for i in indices]
        query = self.processor(text=prompts, images=images, padding=True, return_tensors="pt")
        query = {k: v for k, v in query.items() if k != "token_type_ids"}
        tokens = self.processor.tokenizer([self.pairs.pairs[i].target for i in indices], padding=True,
                                          return_tensors="pt")
        target = {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}
        return query, target

    def __call__(self, indices: Sequence[int]) -> StepBatch:
        indices = [int(i) for i in indices]
        size = self.chunk_size or len(indices)
        chunks = [self.encode(indices[i:i + size]) for i in range(0, len(indices), size)]
        return StepBatch(chunks, torch.as_tensor(self.target_ids[indices]), indices)


def batch_indices(step: int, n_pairs: int, global_batch: int, seed: int) -> np.ndarray:
    """The pair indices of global batch ``step``: consecutive slices of a seeded permutation per
    epoch (the last incomplete slice of each epoch dropped), so every step has a full batch."""
    per_epoch = n_pairs // global_batch
    if per_epoch < 1:
        raise FeatkitError(f"{n_pairs} pairs cannot fill a global batch of {global_batch}; lower --batch-size")
    epoch, position = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n_pairs)
    return order[position * global_batch:(position + 1) * global_batch]


def _as_is(item: Any) -> Any:
    return item


def rank_share(indices: Sequence[int], rank: int, world: int) -> list[int]:
    """This rank's contiguous share of a global batch (rank-major: the order the gather builds)."""
    per = len(indices) // world
    return [int(i) for i in indices[rank * per:(rank + 1) * per]]


class _StepData(torch.utils.data.Dataset):
    """Map-style dataset over step numbers (so DataLoader workers can prepare batches ahead)."""

    def __init__(self, batcher: PairBatcher, steps: int, global_batch: int, seed: int, rank: int, world: int) -> None:
        self.batcher = batcher
        self.steps = steps
        self.global_batch = global_batch
        self.seed = seed
        self.rank = rank
        self.world = world

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int) -> StepBatch:
        indices = batch_indices(step, len(self.batcher.pairs), self.global_batch, self.seed)
        return self.batcher(rank_share(indices, self.rank, self.world))


# -- one step -----------------------------------------------------------------------------------


def compute_gradients(
    encoder: ContrastiveEncoder,
    batch: StepBatch,
    *,
    temperature: float = DEFAULT_TEMPERATURE,
    symmetric: bool = False,
    mask_duplicate_targets: bool = True,
    ddp: torch.nn.parallel.DistributedDataParallel | None = None,
    distributed: bool = False,
) -> LossOutput:
    """Accumulate the InfoNCE gradient of ``batch`` into the LoRA weights' ``.grad``.

    One chunk: a plain forward and backward. Several: GradCache. ``ddp`` (wrapping ``encoder``)
    runs the graph-building forwards so gradients are all-reduced; ``distributed`` gathers the
    embeddings across ranks for the negatives.
    """
    ids = batch.target_ids if mask_duplicate_targets else None

    def loss_fn(query: torch.Tensor, target: torch.Tensor) -> LossOutput:
        return info_nce(query, target, temperature=temperature, symmetric=symmetric, target_ids=ids,
                        distributed=distributed)

    runner = ddp if ddp is not None else encoder
    if len(batch.chunks) == 1:
        query, target = runner(*batch.chunks[0])
        out = loss_fn(query, target)
        out.loss.backward()
        return dataclasses.replace(out, loss=out.loss.detach())
    return cached_backward(
        lambda chunk: encoder(*chunk),
        batch.chunks,
        loss_fn,
        replay_encode=lambda chunk: runner(*chunk),
        no_sync=ddp.no_sync if ddp is not None else None,
        device=encoder.extractor.device,
    )


def step_seed(seed: int, step: int, rank: int) -> int:
    """The dropout generator's seed at ``step`` on ``rank``."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, np.uint32)[0])


# -- the loop -----------------------------------------------------------------------------------


def adapt(
    model: str,
    pairs: PairSet,
    out: str | os.PathLike,
    *,
    config: AdaptConfig | None = None,
    weights: str | os.PathLike | None = None,
    device: str = "auto",
    overwrite: bool = False,
    keep_checkpoints: bool = False,
    num_workers: int = 0,
    progress: bool = True,
    image_size: int | None = None,
) -> AdaptResult:
    """Train a LoRA adapter on ``pairs`` and write it to ``out`` (see the module docstring).

    Resumes from ``out/checkpoints`` when a previous run with the same settings was interrupted;
    returns at once when ``out`` already holds a finished run with these settings (``overwrite``
    retrains). Under ``torchrun`` every process runs this with the same arguments.
    """
    from extractors import load_extractor
    from featkit import distributed
    from featkit._device import resolve_device

    config = config or AdaptConfig()
    config.check()
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise FeatkitError(f"--out {out} is a file; adapt writes a directory (the adapter, its log and plot)")
    device = distributed.local_device(resolve_device(device))
    on_gpu = device.startswith("cuda")
    precision = config.precision if config.precision != "auto" else ("bf16" if on_gpu else "fp32")
    if precision == "bf16" and not on_gpu:
        raise FeatkitError("--precision bf16 needs a GPU; use fp32 on CPU")
    # load before joining the process group: transformers' save_pretrained writes nothing on ranks
    # other than 0 once torch.distributed is initialised, and the tiny test VLMs are built that way
    extractor = load_extractor(model, weights=str(weights) if weights else None, device=device,
                               precision=precision, options={"image_size": image_size} if image_size else {})
    if not isinstance(extractor, AdaptableExtractor):
        raise FeatkitError(
            f"{extractor.spec.name} is not a transformers VLM; adapt supports the hf family and "
            f"test:tiny-llava / test:tiny-qwen2vl"
        )
    ctx = distributed.init(device)
    rank, world = (ctx.rank, ctx.world_size) if ctx else (0, 1)
    devices = [torch.device(device)] if on_gpu else []
    with torch.random.fork_rng(devices=devices):
        return _adapt(extractor, pairs, out, config=config, precision=precision, ctx=ctx,
                      rank=rank, world=world, overwrite=overwrite, keep_checkpoints=keep_checkpoints,
                      num_workers=num_workers, progress=progress)


def _adapt(extractor: AdaptableExtractor, pairs, out: Path, *, config: AdaptConfig, precision, ctx, rank, world,
           overwrite, keep_checkpoints, num_workers, progress) -> AdaptResult:
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    from featkit import distributed

    global_batch = config.batch_size * world
    run = {
        "model": extractor.spec.name,
        "weights": extractor.weights_identity,
        "base_model": extractor.base_model_reference,
        "data": pairs.describe(),
        "settings": {k: v for k, v in dataclasses.asdict(config).items() if k not in _RUN_IDENTITY_EXCLUDES},
        "global_batch": global_batch,
        "precision": precision,
    }
    log_path, plot_path = out / LOG_NAME, out / PLOT_NAME
    if overwrite and rank == 0:
        for name in OUTPUT_FILES:
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    distributed.barrier(ctx)
    done = finished_run(out, run)
    if done is not None:
        return _result(out, done, config, pairs, steps_run=0, resumed_from=None, already=True, extractor=None)
    if (out / "adapter_config.json").is_file() and not log_path.is_file():
        raise FeatkitError(f"{out} already holds a peft adapter that featkit adapt did not write; choose another --out")

    torch.manual_seed(config.seed)  # identical LoRA initialisation on every rank
    peft_model = attach_lora(extractor, config)
    peft_model.peft_config["default"].base_model_name_or_path = run["base_model"]
    autocast = torch.bfloat16 if precision == "bf16" else None
    encoder = ContrastiveEncoder(extractor, peft_model, autocast_dtype=autocast)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    warmup = math.ceil(config.warmup_ratio * config.steps)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, config.steps)

    start, log, resumed_from = 0, [], None
    checkpoint = latest_checkpoint(out)
    if checkpoint is not None:
        saved = checkpoint_run(checkpoint)
        mismatch = run_mismatch(saved, run)
        if mismatch:
            raise FeatkitError(
                f"{out} holds an unfinished run with other settings ({mismatch}); rerun with the same "
                f"settings to resume, or pass --overwrite or another --out"
            )
        start, log = load_checkpoint(checkpoint, peft_model, optimizer, scheduler)
        resumed_from = start

    ddp = None
    if ctx is not None:
        ddp = _wrap_ddp(encoder, extractor.device)
    peft_model.train()
    batcher = PairBatcher.for_extractor(pairs, extractor, config.chunk_size)
    loader = torch.utils.data.DataLoader(
        _StepData(batcher, config.steps, global_batch, config.seed, rank, world),
        sampler=range(start, config.steps), batch_size=None, num_workers=num_workers, collate_fn=_as_is,
    )
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=config.steps, initial=start, desc="adapt", unit="step", disable=not progress or rank != 0)
    started = time.perf_counter()
    for step, batch in enumerate(loader, start=start):
        tick = time.perf_counter()
        torch.manual_seed(step_seed(config.seed, step, rank))
        optimizer.zero_grad(set_to_none=True)
        output = compute_gradients(
            encoder, batch, temperature=config.temperature, symmetric=config.symmetric,
            mask_duplicate_targets=config.mask_duplicate_targets, ddp=ddp, distributed=ctx is not None,
        )
        grad_norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm if config.max_grad_norm > 0 else float("inf"))
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        loss, accuracy = _mean_over_ranks(ctx, [float(output.loss), output.accuracy])
        if not math.isfinite(loss):
            raise FeatkitError(f"the loss became {loss} at step {step + 1}; lower --lr or raise --temperature")
        log.append({"step": step + 1, "loss": loss, "accuracy": accuracy, "lr": lr,
                    "grad_norm": float(grad_norm), "seconds": time.perf_counter() - tick})
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", acc=f"{accuracy:.2f}")
        if (step + 1) % config.save_every == 0 or step + 1 == config.steps:
            if rank == 0:
                save_checkpoint(out, step + 1, peft_model, optimizer, scheduler, log, run)
                write_log(log_path, run, log, finished=False)
            distributed.barrier(ctx)
    bar.close()
    steps_run = config.steps - start
    peft_model.eval()
    if rank == 0:
        peft_model.save_pretrained(str(out), save_embedding_layers=False)
        title = f"{run['model']} on {pairs.source} ({pairs.task}), global batch {global_batch}"
        extra = {"wall_seconds_this_run": time.perf_counter() - started, "world_size": world,
                 "extraction_instruction": pairs.extraction_instruction}
        write_log(log_path, run, log, finished=True, extra=extra)
        plot_log(log, plot_path, title)
        if not keep_checkpoints:
            shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    distributed.barrier(ctx)
    record = json.loads(log_path.read_text()) if log_path.is_file() else {**run, "log": log}
    return _result(out, record, config, pairs, steps_run=steps_run, resumed_from=resumed_from, already=False,
                   extractor=extractor)


def _wrap_ddp(encoder: ContrastiveEncoder, device: str) -> torch.nn.parallel.DistributedDataParallel:
    """DDP over the LoRA weights only: frozen weights and buffers are left out of its broadcast
    and all-reduce (every rank loaded the same base model)."""
    from torch.nn.parallel import DistributedDataParallel

    frozen = [name for name, p in encoder.named_parameters() if not p.requires_grad]
    frozen += [name for name, _ in encoder.named_buffers()]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(encoder, frozen)
    device_ids = [torch.device(device).index or 0] if device.startswith("cuda") else None
    return DistributedDataParallel(encoder, device_ids=device_ids)


def _mean_over_ranks(ctx, values: list[float]) -> list[float]:
    if ctx is None:
        return values
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return (tensor.cpu() / ctx.world_size).tolist()


def _result(out: Path, record: dict, config: AdaptConfig, pairs: PairSet, *, steps_run: int,
            resumed_from: int | None, already: bool, extractor: Any) -> AdaptResult:
    log = record.get("log") or []
    plot = out / PLOT_NAME
    return AdaptResult(
        adapter=out,
        log_path=out / LOG_NAME,
        plot_path=plot if plot.is_file() else None,
        steps=config.steps,
        steps_run=steps_run,
        resumed_from=resumed_from,
        first_loss=log[0]["loss"] if log else None,
        final_loss=log[-1]["loss"] if log else None,
        already_trained=already,
        extraction_instruction=pairs.extraction_instruction,
        extractor=extractor,
    )


def suggested_extract_command(model: str, dataset: str | None, result: AdaptResult, data_root: str | None = None) -> str:
    """The ``featkit extract`` call that uses the adapter with the prompt it was trained on."""
    import shlex

    from extractors.hf import DEFAULT_INSTRUCTION

    parts = ["featkit", "extract", "--model", model, "--dataset", dataset or "DATASET"]
    if data_root:
        parts += ["--data-root", str(data_root)]
    parts += ["--adapter", str(result.adapter), "--features", "last_token"]
    instruction = result.extraction_instruction
    if instruction and instruction != DEFAULT_INSTRUCTION:
        parts += ["--instruction", instruction]
    return shlex.join(parts)
