"""Adaptation settings (no torch import, so the CLI parser builds instantly)."""

from __future__ import annotations

from dataclasses import dataclass

from featkit.errors import FeatkitError

DEFAULT_TEMPERATURE = 0.02
LANGUAGE_MODEL = "language_model"


@dataclass(frozen=True)
class AdaptConfig:
    """Training settings (defaults: seed 001's recipe, VLM2Vec's LoRA shape).

    ``batch_size`` is per process (the global batch is ``batch_size x world size``);
    ``chunk_size`` (None: no chunking) embeds that many pairs at a time with GradCache;
    ``lora_targets``: ``"language_model"`` (every linear layer of the LM: attention and MLP
    projections; the vision tower, projector and LM head excluded), ``"all-linear"`` (peft's),
    ``"re:<regex>"`` matched against full module names, or comma-separated module-name suffixes
    (peft's list semantics; note these match the vision tower too, e.g. ``q_proj``).
    ``mask_duplicate_targets`` keeps a pair's identical-text targets out of its negatives.
    ``precision``: ``auto`` (bf16 on GPU, fp32 on CPU), ``fp32`` or ``bf16``.
    """

    steps: int = 400
    batch_size: int = 64
    chunk_size: int | None = None
    lr: float = 2e-5
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    temperature: float = DEFAULT_TEMPERATURE
    symmetric: bool = False
    mask_duplicate_targets: bool = True
    lora_r: int = 16
    lora_alpha: int = 64
    lora_dropout: float = 0.1
    lora_targets: str = LANGUAGE_MODEL
    gradient_checkpointing: bool = True
    save_every: int = 50
    seed: int = 0
    precision: str = "auto"

    def check(self) -> None:
        problems = []
        if self.steps < 1:
            problems.append("--steps must be at least 1")
        if self.batch_size < 2:
            problems.append("--batch-size must be at least 2 (in-batch negatives)")
        if self.chunk_size is not None and self.chunk_size < 1:
            problems.append("--chunk-size must be positive")
        if self.lr <= 0:
            problems.append("--lr must be positive")
        if not 0 <= self.warmup_ratio < 1:
            problems.append("--warmup-ratio must be in [0, 1)")
        if self.temperature <= 0:
            problems.append("--temperature must be positive")
        if self.lora_r < 1 or self.lora_alpha <= 0:
            problems.append("--lora-r and --lora-alpha must be positive")
        if not 0 <= self.lora_dropout < 1:
            problems.append("--lora-dropout must be in [0, 1)")
        if self.save_every < 1:
            problems.append("--save-every must be at least 1")
        if self.precision not in ("auto", "fp32", "bf16"):
            problems.append("--precision must be auto, fp32 or bf16")
        if problems:
            raise FeatkitError("; ".join(problems))
