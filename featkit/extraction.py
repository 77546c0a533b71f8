"""The extraction pipeline: dataset reader -> preprocessing -> model -> sharded cache -> HDF5.

Shards are aligned with batches (a shard is ``shard_size`` rows, processed in batches that start
at the shard's first row), so a resumed run feeds the model exactly the batches an uninterrupted
run would, and the assembled file is identical.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from featkit._device import resolve_device
from featkit.cache import (
    CacheKey,
    Shard,
    StreamedColumn,
    base_attrs,
    cache_root,
    contents_digest,
    key_lock,
    parts_dir,
    read_attrs,
    read_parts_meta,
    read_shard_kind,
    read_shard_rows,
    samples_digest,
    shard_kinds,
    shard_path,
    write_final,
    write_parts_meta,
    write_shard,
)
from featkit.cache_files import check_file, file_kinds
from featkit.datasets import ImageDataset, Sample, open_dataset
from featkit.datasets.images import DEFAULT_MAX_PIXELS, to_rgb
from featkit.errors import BadImageError, FeatkitError, UnknownNameError

DEFAULT_SHARD_SIZE = 1024


@dataclass
class SplitSummary:
    """What one split's extraction did."""

    split: str
    path: Path
    n: int
    dims: dict[str, int]
    seconds: float
    cached: bool
    skipped: list[str] = field(default_factory=list)
    shards_done: int = 0
    shards_reused: int = 0


# -- decoding -----------------------------------------------------------------------------------


class _DecodeSplit:
    """Map-style dataset over one split: position -> (position, tensor or None, error).

    Every image reaches the model's transform in RGB (:func:`featkit.datasets.images.to_rgb`,
    whatever the reader returned); an undecodable image, one over the pixel limit or one whose
    mode has no RGB rule is a bad image, reported with its path.
    """

    def __init__(self, dataset: ImageDataset, samples: Sequence[Sample], transform) -> None:
        self.dataset = dataset
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, position: int):
        sample = self.samples[position]
        from PIL import Image

        try:
            image = to_rgb(self.dataset.load_image(sample))
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            return position, None, f"{self.dataset.image_path(sample)}: {err}"
        return position, self.transform(image), None


def _collate(items):
    import torch

    positions = [p for p, t, _ in items if t is not None]
    tensors = [t for _, t, _ in items if t is not None]
    bad = [(p, e) for p, t, e in items if t is None]
    images = torch.stack(tensors) if tensors else None
    return positions, images, bad


def _batches(shard_indices: Sequence[int], n: int, shard_size: int, batch_size: int) -> list[list[int]]:
    batches = []
    for index in shard_indices:
        start, stop = index * shard_size, min(n, (index + 1) * shard_size)
        for b in range(start, stop, batch_size):
            batches.append(list(range(b, min(stop, b + batch_size))))
    return batches


def resolve_num_workers(num_workers: int | str) -> int:
    if num_workers in ("auto", None):
        return 0 if (os.cpu_count() or 1) <= 2 else min(8, (os.cpu_count() or 2) - 1)
    return int(num_workers)


# -- the model step -----------------------------------------------------------------------------


def _forward(extractor, images, kinds: Sequence[str], device: str, precision: str,
             limits: dict[str, int]) -> dict[str, np.ndarray]:
    """Run the extractor (autocast in fp16/bf16 on GPU). On CUDA out-of-memory the batch is
    split in halves, and the smaller size is remembered in ``limits`` for the following batches."""
    import torch

    def run(batch):
        ctx = contextlib.nullcontext()
        if device.startswith("cuda") and precision in ("fp16", "bf16"):
            dtype = torch.float16 if precision == "fp16" else torch.bfloat16
            ctx = torch.autocast("cuda", dtype=dtype)
        with ctx, torch.inference_mode():
            out = extractor(batch, kinds)
        return {k: v.float().cpu().numpy() for k, v in out.items()}

    parts, start = [], 0
    while start < len(images):
        size = min(limits.get("batch") or len(images), len(images) - start)
        out_of_memory = False
        try:
            parts.append(run(images[start : start + size]))
        except torch.cuda.OutOfMemoryError:
            out_of_memory = True  # retry outside the except block, so the failed graph is freed
        if out_of_memory:
            if size == 1:
                raise FeatkitError("CUDA out of memory on a single image; use --device cpu or a smaller model")
            torch.cuda.empty_cache()
            limits["batch"] = size // 2
            print(f"featkit: CUDA out of memory; continuing with batches of {size // 2}", file=sys.stderr)
            continue
        start += size
    return parts[0] if len(parts) == 1 else {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


# -- orchestration ------------------------------------------------------------------------------


def _split_key(extractor, model_id: str, dataset: ImageDataset, split: str, samples: Sequence[Sample]) -> CacheKey:
    settings = extractor.key_settings()
    if dataset.max_pixels != DEFAULT_MAX_PIXELS:
        # which images count as bad, and so which rows the file holds (default keys unchanged)
        settings["max_pixels"] = dataset.max_pixels
    return CacheKey(
        model=model_id,
        weights=extractor.weights_identity,
        preprocessing=extractor.preprocessing,
        settings=settings,
        dataset=dataset.name,
        data_root=dataset.key_root(),
        split=split,
        samples=samples_digest(samples),
    )


def extract(
    model: str,
    dataset: str,
    *,
    data_root: str | os.PathLike | None = None,
    splits: Sequence[str] | None = None,
    features: Sequence[str] | None = None,
    weights: str | os.PathLike | None = None,
    adapter: str | os.PathLike | None = None,
    batch_size: int = 64,
    device: str = "auto",
    precision: str = "fp32",
    num_workers: int | str = "auto",
    cache_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    skip_bad: bool = False,
    verify: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    shard_size: int = DEFAULT_SHARD_SIZE,
    progress: bool = True,
    options: Mapping[str, Any] | None = None,
    extractor=None,
) -> list[SplitSummary]:
    """Extract features of every requested split into the cache (resuming any unfinished run).

    Returns one :class:`SplitSummary` per split; cached splits are reported, not recomputed.
    ``splits`` None: the dataset's own (train, val, test; test alone for a shifted test set).
    ``options`` are the model family's declared options (checked before any data is read),
    ``adapter`` a peft adapter directory for the families that apply one. ``extractor`` may pass
    an already-loaded adapter (its spec must be ``model``'s). An image with more than
    ``max_pixels`` pixels (0: no limit) is a bad image: it stops the run, or ``skip_bad`` leaves
    it out like an undecodable one. A cached file is reused when its key matches the data (ids,
    labels, each image file's size and modification time) and it passes its checksums; with
    ``verify`` the images' bytes are hashed too and must match the ones it was extracted from.
    """
    from extractors import check_options, get_spec, load_extractor

    if batch_size < 1 or shard_size < 1:
        raise FeatkitError("--batch-size and shard size must be positive")
    if max_pixels < 0:
        raise FeatkitError(f"--max-pixels must be >= 0 (0 = no limit), got {max_pixels}")
    spec = get_spec(model)
    if extractor is None:
        check_options(spec, options, adapter=adapter)  # a typo fails before the dataset is read
    ds = open_dataset(dataset, data_root)
    ds.max_pixels = max_pixels
    splits = list(splits) if splits is not None else list(ds.splits)  # None: the dataset's own
    split_samples = {split: ds.samples(split) for split in splits}  # fails early on missing data
    kinds = list(features) if features else list(spec.default_features)
    unknown = [k for k in kinds if k not in spec.kinds]
    if unknown:
        raise UnknownNameError(
            f"model {spec.name} has no feature kind {', '.join(unknown)} (kinds: {', '.join(spec.kinds)})"
        )
    from featkit import distributed

    device = distributed.local_device(resolve_device(device))
    if device == "cpu" and precision != "fp32":
        print(f"featkit: {precision} runs on GPU only; using fp32 on CPU", file=sys.stderr)
        precision = "fp32"
    if extractor is None:
        from extractors.weights import reading_checkpoint

        reading = reading_checkpoint(weights) if weights is not None else contextlib.nullcontext()
        with reading:  # a checkpoint the family's library cannot read is one line naming it
            extractor = load_extractor(model, weights=weights, adapter=adapter, device=device,
                                       precision=precision, options=options)
    # join torchrun's group only after loading: some loaders save/build files on rank 0 only once
    # torch.distributed is initialised (transformers' save_pretrained)
    dist = distributed.init(device) if distributed.launched_by_torchrun() else None
    root = cache_root(cache_dir)
    summaries = []
    for split in splits:
        summaries.append(
            _extract_split(
                extractor, spec.name, ds, split, split_samples[split], kinds,
                root=root, batch_size=batch_size, device=device, precision=precision,
                num_workers=resolve_num_workers(num_workers), overwrite=overwrite, skip_bad=skip_bad,
                shard_size=shard_size, progress=progress, model_alias=model, dist=dist, verify=verify,
            )
        )
    return summaries


def _extract_split(
    extractor, model_id, ds, split, samples, kinds, *, root, batch_size, device, precision,
    num_workers, overwrite, skip_bad, shard_size, progress, model_alias, dist=None, verify=False,
) -> SplitSummary:
    """Extract one split: reuse the file on a hit, else resume or compute the shards, assemble.

    Under torchrun (``dist``), rank 0 holds the key lock and makes the decisions; every rank
    claims and computes missing shards; rank 0 assembles.
    """
    from featkit import distributed

    started = time.perf_counter()
    key = _split_key(extractor, model_id, ds, split, samples)
    path = key.path(root)
    parts = parts_dir(path)
    main = dist is None or dist.is_main

    def on_wait(lock_path):
        print(f"featkit: waiting for another process writing {path} ...", file=sys.stderr)

    lock = key_lock(path, on_wait=on_wait) if main else contextlib.nullcontext()
    with lock:
        plan = None
        if main:
            contents = contents_digest(samples) if verify else None
            plan = _plan_split(path, parts, key, kinds, overwrite=overwrite, shard_size=shard_size,
                               batch_size=batch_size, contents=contents)
            if dist is not None:
                distributed.clear_claims(parts)
        plan = distributed.broadcast(dist, plan)
        if plan["cached"]:
            meta = read_attrs(path)
            return SplitSummary(split, path, int(meta.get("n", len(samples))),
                                {k: int(d) for k, d in (meta.get("dims") or {}).items() if k in kinds},
                                time.perf_counter() - started, cached=True,
                                skipped=list(meta.get("skipped_ids") or []))
        kinds, shard_size, batch_size = plan["kinds"], plan["shard_size"], plan["batch_size"]
        n = len(samples)
        n_shards = math.ceil(n / shard_size) if n else 0
        missing = [i for i in range(n_shards) if not set(kinds) <= (shard_kinds(parts, i) or set())]
        distributed.barrier(dist)
        run = dict(n=n, shard_size=shard_size, batch_size=batch_size, device=device, precision=precision,
                   num_workers=num_workers, skip_bad=skip_bad, desc=f"{ds.name}/{split}")
        if dist is None:
            bad = _run_shards(extractor, ds, samples, kinds, missing, parts, progress=progress, **run)
        else:
            bad = []
            total = sum(min(n, (i + 1) * shard_size) - i * shard_size for i in missing)
            with _job_bar(total, run["desc"], progress and dist.is_main) as bar:
                for index in missing:  # dynamic claims balance the load across ranks
                    if distributed.try_claim(parts, index, dist.rank):
                        bad += _run_shards(extractor, ds, samples, kinds, [index], parts, progress=False, **run)
                        done = sum(1 for i in missing if shard_path(parts, i).exists())
                        bar.update(min(total, done * shard_size) - bar.n)
            bad = distributed.gather_lists(dist, bad)
        if bad and not skip_bad:
            listed = "; ".join(msg for _, msg in bad[:5])
            more = f" (+{len(bad) - 5} more)" if len(bad) > 5 else ""
            raise BadImageError(
                f"{len(bad)} unreadable image(s) in {ds.name}/{split}: {listed}{more}; fix or remove "
                f"them, or rerun with --skip-bad to leave them out (finished shards are kept)"
            )
        summary = SplitSummary(split, path, 0, {}, 0.0, cached=False)
        if main:
            summary = _assemble(extractor, model_id, model_alias, ds, split, samples, kinds, key, path, parts,
                                n_shards=n_shards, shard_size=shard_size, batch_size=batch_size,
                                device=device, precision=precision, skip_bad=skip_bad,
                                contents=plan["contents"])
        summary = distributed.broadcast(dist, summary)
        summary.seconds = time.perf_counter() - started
        summary.shards_done, summary.shards_reused = len(missing), n_shards - len(missing)
        return summary


def _job_bar(total: int, desc: str, enabled: bool):
    """Rank 0's bar for the whole job, advanced as shards of every rank land on disk."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"{desc} (all ranks)", unit="img", disable=not enabled, dynamic_ncols=True, file=sys.stderr)


def _plan_split(path: Path, parts: Path, key: CacheKey, kinds, *, overwrite, shard_size, batch_size,
                contents: str | None = None) -> dict[str, Any]:
    """Decide (under the key lock) whether the file is a hit and which shard layout to use.

    A file that fails :func:`~featkit.cache_files.check_file` (truncated, corrupt, foreign) or, with
    ``contents`` (``--verify``), was extracted from other image bytes is reported in one line
    and rebuilt; shards cut from other image bytes are dropped.
    """
    if path.exists() and not overwrite:
        broken = check_file(path, data=True)
        changed = None if broken else _contents_problem(read_attrs(path).get("contents"), contents)
        if broken:
            print(f"featkit: {path}: {broken}; removing it and extracting again", file=sys.stderr)
            path.unlink()
        elif changed:
            print(f"featkit: {path}: {changed}; extracting again", file=sys.stderr)
        else:
            have = file_kinds(path)
            if set(kinds) <= set(have):
                return {"cached": True, "kinds": list(kinds)}
            kinds = sorted(set(kinds) | set(have))  # re-extract with the union, replacing the file
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        stale.unlink(missing_ok=True)
    meta = read_parts_meta(parts)
    other_bytes = contents is not None and (meta or {}).get("contents") != contents
    if parts.exists() and (overwrite or other_bytes):
        shutil.rmtree(parts)
        meta = None
    if meta and meta.get("key") == key.digest:  # resume with the layout the shards were cut with
        shard_size = int(meta["shard_size"])
        batch_size = int(meta.get("batch_size", batch_size))
    write_parts_meta(parts, {"key": key.digest, "key_fields": key.as_dict(), "shard_size": shard_size,
                             "batch_size": batch_size, "contents": contents})
    return {"cached": False, "kinds": list(kinds), "shard_size": shard_size, "batch_size": batch_size,
            "contents": contents}


def _contents_problem(recorded: str | None, contents: str | None) -> str | None:
    """Why a file's recorded image bytes do not match the ones hashed now (``--verify``)."""
    if contents is None:
        return None
    if recorded is None:
        return "extracted without --verify, so its images' bytes were never hashed"
    if recorded != contents:
        return "its images' bytes changed since extraction (same sizes and modification times)"
    return None


def _run_shards(extractor, ds, samples, kinds, todo, parts, *, n, shard_size, batch_size, device,
                precision, num_workers, skip_bad, progress, desc) -> list[tuple[int, str]]:
    """Compute and write the shards in ``todo``; returns the unreadable images met."""
    if not todo:
        return []
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    batches = _batches(todo, n, shard_size, batch_size)
    loader = DataLoader(
        _DecodeSplit(ds, samples, extractor.transform),
        batch_sampler=batches,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=device.startswith("cuda"),
        persistent_workers=False,
    )
    total = sum(len(b) for b in batches)
    limits: dict[str, int] = {}
    bad_all: list[tuple[int, str]] = []
    current: int | None = None
    rows: dict[str, list[np.ndarray]] = {}
    positions: list[int] = []
    shard_bad: list[tuple[int, str]] = []

    def flush():
        if current is None:
            return
        if shard_bad and not skip_bad:
            return  # a shard with unreadable images is not stored in strict mode
        feats = {k: (np.concatenate(v) if v else np.zeros((0, extractor.kinds.get(k, 0)), np.float32)) for k, v in rows.items()}
        for k in kinds:
            feats.setdefault(k, np.zeros((0, extractor.kinds.get(k, 0)), np.float32))
        write_shard(parts, Shard(current, np.asarray(positions, np.int64), feats,
                                 np.asarray([p for p, _ in shard_bad], np.int64)))

    with tqdm(total=total, desc=desc, unit="img", disable=not progress, dynamic_ncols=True, file=sys.stderr) as bar:
        for batch_positions, images, bad in loader:
            first = (batch_positions or [p for p, _ in bad])[0]
            index = first // shard_size
            if index != current:
                flush()
                current, rows, positions, shard_bad = index, {k: [] for k in kinds}, [], []
            bad_all.extend(bad)
            shard_bad.extend(bad)
            if images is not None:
                out = _forward(extractor, images, kinds, device, precision, limits)
                for k in kinds:
                    array = out[k]
                    if not np.isfinite(array).all():
                        rows_bad = np.where(~np.isfinite(array).all(axis=1))[0]
                        ids = [samples[batch_positions[i]].sample_id for i in rows_bad[:5]]
                        raise FeatkitError(
                            f"non-finite '{k}' features for {len(rows_bad)} image(s) ({', '.join(ids)}); "
                            f"nothing was stored for this batch — check the weights, or use --precision fp32"
                        )
                    rows[k].append(array.astype(np.float32, copy=False))
                positions.extend(batch_positions)
            bar.update(len(batch_positions) + len(bad))
        flush()
    return bad_all


def _assemble(extractor, model_id, model_alias, ds, split, samples, kinds, key, path, parts, *,
              n_shards, shard_size, batch_size, device, precision, skip_bad,
              contents=None) -> SplitSummary:
    positions: list[np.ndarray] = []
    skipped: list[np.ndarray] = []
    for index in range(n_shards):
        rows = read_shard_rows(parts, index)
        if rows is None:
            raise FeatkitError(f"shard {index} of {path} is missing after extraction; rerun the same command")
        positions.append(rows[0])
        skipped.append(rows[1])
    dims = {k: int(extractor.kinds.get(k) or (read_shard_kind(parts, 0, k).shape[1] if n_shards else 0))
            for k in kinds}
    order = np.concatenate(positions) if positions else np.zeros(0, np.int64)

    def blocks(kind: str) -> Iterator[np.ndarray]:
        # one shard of one kind at a time: memory stays at a shard, whatever N and the kinds
        for index in range(n_shards):
            yield read_shard_kind(parts, index, kind)

    arrays = {k: StreamedColumn(len(order), dims[k], functools.partial(blocks, k)) for k in kinds}
    skipped_pos = np.concatenate(skipped) if skipped else np.zeros(0, np.int64)
    expected = len(samples) - len(skipped_pos)
    if len(order) != expected or (len(order) and np.any(np.diff(order) <= 0)):
        raise FeatkitError(f"shards of {path} are inconsistent; rerun with --overwrite")
    kept = [samples[i] for i in order]
    skipped_ids = [samples[i].sample_id for i in skipped_pos]
    attrs = base_attrs()
    attrs.update(
        {
            "model": model_id,
            "model_alias": model_alias,
            "family": extractor.spec.family,
            "weights": key.weights,
            "preprocessing": dict(key.preprocessing),
            "dataset": ds.name,
            "data_root": key.data_root,
            "split": split,
            "n": len(kept),
            "kinds": list(kinds),
            "dims": dims,
            "layer_depths": extractor.layer_depths(),
            "settings": {
                **dict(key.settings),
                "batch_size": batch_size,
                "shard_size": shard_size,
                "device": device,
                "precision": precision,
                "skip_bad": skip_bad,
            },
            "skipped_ids": skipped_ids,
            "key": key.digest,
            "key_fields": key.as_dict(),
            "versions": _library_versions(),
        }
    )
    if contents is not None:
        attrs["contents"] = contents  # the images' bytes (--verify), checked by a later --verify
    write_final(
        path,
        features=arrays,
        labels=np.asarray([s.label for s in kept], np.int64),
        sample_ids=[s.sample_id for s in kept],
        class_names=ds.class_names,
        attrs=attrs,
    )
    shutil.rmtree(parts, ignore_errors=True)
    return SplitSummary(split, path, len(kept), dims, 0.0, cached=False, skipped=skipped_ids)


def _library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("torch", "torchvision", "open_clip_torch", "timm", "transformers", "peft", "numpy", "h5py"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[name] = md.version(name)
    return out


def iter_summaries_table(summaries: Sequence[SplitSummary]) -> Iterator[dict[str, Any]]:
    for s in summaries:
        yield {
            "split": s.split,
            "n": s.n,
            "dims": ", ".join(f"{k}={d}" for k, d in s.dims.items()),
            "seconds": f"{s.seconds:.1f}",
            "status": "cached" if s.cached else (f"new ({s.shards_reused} shards resumed)" if s.shards_reused else "new"),
            "file": str(s.path),
        }
