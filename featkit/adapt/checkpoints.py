"""The files of an adaptation run: resumable checkpoints, the training log and its plot.

``out/checkpoints/step-NNNNNN/`` (adapter, optimizer, scheduler, step, log; written to a
temporary folder and renamed when complete, so a killed run never leaves a half checkpoint),
``out/train_log.json`` and ``out/loss.png``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from featkit.errors import FeatkitError

LOG_NAME = "train_log.json"
PLOT_NAME = "loss.png"
CHECKPOINTS = "checkpoints"
STATE_NAME = "trainer_state.pt"
COMPLETE_MARK = "COMPLETE"
#: files a finished run writes into ``out/`` (``--overwrite`` removes exactly these)


# -- checkpoints --------------------------------------------------------------------------------


def checkpoint_dir(out: Path, step: int) -> Path:
    return out / CHECKPOINTS / f"step-{step:06d}"


def latest_checkpoint(out: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint under ``out/checkpoints`` (incomplete ones are ignored)."""
    folder = Path(out) / CHECKPOINTS
    complete = sorted(p for p in folder.glob("step-*") if p.is_dir() and (p / COMPLETE_MARK).is_file()) if folder.is_dir() else []
    return complete[-1] if complete else None


def save_checkpoint(out: Path, step: int, peft_model, optimizer, scheduler, log: list, run: dict) -> Path:
    """Write ``checkpoints/step-N`` atomically (a temporary folder renamed when complete), then
    drop older checkpoints."""
    final = checkpoint_dir(out, step)
    staging = final.with_name(final.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    peft_model.save_pretrained(str(staging), save_embedding_layers=False)
    torch.save({"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "log": log, "run": run}, staging / STATE_NAME)
    (staging / COMPLETE_MARK).write_text(str(step))
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    for other in (out / CHECKPOINTS).glob("step-*"):
        if other != final:
            shutil.rmtree(other, ignore_errors=True)
    return final


def load_checkpoint(path: Path, peft_model, optimizer, scheduler) -> tuple[int, list]:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = torch.load(path / STATE_NAME, map_location="cpu", weights_only=True)
    weights = load_file(str(path / "adapter_model.safetensors"))
    result = set_peft_model_state_dict(peft_model, weights)
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise FeatkitError(f"checkpoint {path} does not fit this model ({len(unexpected)} unexpected keys)")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return int(state["step"]), list(state["log"])


def checkpoint_run(path: Path) -> dict:
    """The run settings a checkpoint was written with."""
    return torch.load(path / STATE_NAME, map_location="cpu", weights_only=True)["run"]


def run_mismatch(saved: dict, current: dict) -> str | None:
    for key in sorted(set(saved) | set(current)):
        if saved.get(key) != current.get(key):
            return f"{key}: {saved.get(key)!r} there, {current.get(key)!r} now"
    return None


# -- outputs ------------------------------------------------------------------------------------


def write_log(path: Path, run: dict, log: list, *, finished: bool, extra: dict | None = None) -> None:
    record = {"finished": finished, **run, **(extra or {}), "log": log}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


def plot_log(log: list, path: Path, title: str) -> Path:
    """Loss (and in-batch accuracy) per step, PNG via matplotlib's Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in log]
    fig, (ax_loss, ax_acc) = plt.subplots(2, 1, figsize=(6.4, 5.2), sharex=True)
    ax_loss.plot(steps, [r["loss"] for r in log], lw=1.2)
    ax_loss.set_ylabel("InfoNCE loss")
    ax_loss.set_title(title, fontsize=9)
    ax_loss.grid(alpha=0.3)
    ax_acc.plot(steps, [r["accuracy"] for r in log], lw=1.2, color="tab:green")
    ax_acc.set_ylabel("in-batch top-1")
    ax_acc.set_xlabel("step")
    ax_acc.set_ylim(-0.02, 1.02)
    ax_acc.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def finished_run(out: Path, run: dict) -> dict | None:
    """The log of a finished run in ``out`` with the same settings; error if it differs."""
    log_path = out / LOG_NAME
    if not (log_path.is_file() and (out / "adapter_config.json").is_file()):
        return None
    record = json.loads(log_path.read_text())
    if not record.get("finished"):
        return None
    mismatch = run_mismatch({k: record.get(k) for k in run}, json.loads(json.dumps(run)))
    if mismatch:
        raise FeatkitError(
            f"{out} holds an adapter trained with other settings ({mismatch}); pass --overwrite or another --out"
        )
    return record
