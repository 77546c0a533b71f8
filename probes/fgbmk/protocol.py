"""FG-BMK's machine-oriented protocol as its released code computes it, on feature arrays.

FG-BMK (seed 003) scores features with DINOv2's linear-evaluation harness, changed in ways that
make its figures incomparable with the standard protocol. This module transcribes what that code
computes (SEU-VIPGroup/FG-BMK, commit 7765a10, ``demo/machine_evaluation/eval_linear.py`` and
``eval_retrieval.py`` with ``dinov2/eval/metrics.py`` and ``utils.py``), so featkit can reproduce
its figures and print them next to the corrected protocol. Read, not copied: the functions below
are written for cached arrays, and every place where they cannot follow the released code is in
:data:`LINEAR_DEPARTURES` / :data:`RETRIEVAL_DEPARTURES` (the record states them).

Both protocols train a grid of heads, 1 or 2 last blocks' class tokens (concatenated, earliest
first) x with or without the last block's patch-token mean x 6 learning rates (scaled by
``batch * GPUs / 256``), all at once for 10 x 1000 iterations of batch 128 with a cosine schedule,
and report the head that scores best **on the test set**.

- linear: ``nn.Linear`` heads (weights N(0, 0.01), zero bias), cross-entropy, **Adam** (the SGD
  line of the released code is commented out), weight decay 0; score: test top-1 (micro).
- retrieval: ``nn.Linear`` projection heads to 512-d trained with a triplet loss (margin 1) on the
  train images of the even-numbered classes only, SGD (momentum 0.9); at test time each test
  image is projected, its 10 nearest neighbours (euclidean) are found among 20,000 random train
  images (projected too), each class takes the similarity of its nearest neighbour among those 10
  (-1e4 if absent), and a softmax over classes is scored: "recall@k" is the macro-averaged
  per-class recall of the top-k classes, "mAP" the average precision of the true classes in that
  class ranking (for one label per image: the mean reciprocal rank of the true class).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from featkit.errors import FeatkitError
from probes._checks import check_finite
from probes._progress import progress_bar
from probes.fgbmk.sampling import (
    GALLERY_SIZE,
    LabelSets,
    draw_batches,
    draw_triplets,
    gallery_rows,
    known_rows,
)

LEARNING_RATES = (1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2)
N_LAST_BLOCKS = (1, 2)
BATCH_SIZE = 128
ITERATIONS = 10 * 1000  # epochs x epoch_length
INIT_STD = 0.01
EMBED_DIM = 512
TRIPLET_MARGIN = 1.0
NEIGHBOURS = 10
ABSENT_CLASS_LOGIT = -1e4
RECALL_KS = (1, 10)
LINEAR_OPTIMIZER = "adam"
RETRIEVAL_OPTIMIZER = "sgd"
SGD_MOMENTUM = 0.9
#: F.pairwise_distance's eps, added to every coordinate difference before the norm.
PAIRWISE_EPS = 1e-6
#: CLIP's mean/std (FG-BMK's test transform) and ImageNet's (its train transform).
CLIP_MEAN_STD = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

_COMMON = (
    "head selected on the test split: the grid's head with the best test score is reported "
    "(strictly better than the ones before it), so test labels choose the hyper-parameters",
    "mixed normalisation: FG-BMK trains on images normalised with ImageNet's mean/std "
    "(DINOv2's train transform) and tests on images normalised with CLIP's; one set of cached "
    "features serves both here",
    "no train-time augmentation: FG-BMK trains on random-resized-crop + flip views, features "
    "here are cached from the centre crop",
    "batches come from one seeded permutation stream of the training rows (FG-BMK's sampler "
    "draws from its own seeded stream), heads start from one seeded generator",
)
LINEAR_DEPARTURES = (
    *_COMMON,
    "heads are trained with Adam (the released eval_linear.py; the SGD line is commented out), "
    "weight decay 0, learning rates scaled by batch * GPUs / 256",
    "trained on the whole official train split (train + featkit's val): FG-BMK has no "
    "validation split",
)
RETRIEVAL_DEPARTURES = (
    *_COMMON,
    "'mAP' is not retrieval mAP over the image ranking: it is the average precision of the "
    "true class(es) in a ranking of classes by their nearest neighbour among the query's top "
    f"{NEIGHBOURS} (one label per image: the mean reciprocal rank of the true class); classes "
    "without a neighbour there tie at probability 0 and are ordered by class index here "
    "(torch.argsort, unstable, orders them arbitrarily in FG-BMK)",
    "'recall@k' is the per-class recall of the top-k classes, averaged over classes (macro, "
    "torchmetrics' rule for classes without queries), not Recall@k of the image ranking",
    f"the gallery is {GALLERY_SIZE} random train images (all of them when fewer), not the test "
    "split; a learnt projection head, not the features, is compared",
    "the head is trained with a triplet loss on the even-numbered classes only; negatives are "
    "drawn uniformly from all training images, as FG-BMK's class check (an id compared with a "
    "list) never rejects one, so some negatives share the anchor's class",
)


# --------------------------------------------------------------------------- the head grid


@dataclass(frozen=True)
class HeadConfig:
    """One head of the grid: ``n_blocks`` last class tokens, ``avgpool`` (patch mean appended)
    and the base learning rate ``lr`` (before scaling)."""

    n_blocks: int
    avgpool: bool
    lr: float

    def name(self, batch_size: int, world_size: int = 1) -> str:
        """The head's name as FG-BMK logs it (with the scaled learning rate)."""
        lr = scale_lr(self.lr, batch_size, world_size)
        return f"classifier_{self.n_blocks}_blocks_avgpool_{self.avgpool}_lr_{lr:.5f}".replace(
            ".", "_")


def scale_lr(lr: float, batch_size: int, world_size: int = 1) -> float:
    """DINOv2's linear scaling rule: ``lr * batch * GPUs / 256``."""
    return lr * batch_size * world_size / 256.0


def head_grid(n_blocks_available: int, has_patch_mean: bool,
              learning_rates: Sequence[float] = LEARNING_RATES) -> list[HeadConfig]:
    """FG-BMK's grid in its order (blocks 1, 2; without, with the patch mean; each learning
    rate), limited to what the features provide."""
    if n_blocks_available < 1:
        raise FeatkitError("FG-BMK heads need the class token of at least the last block")
    return [HeadConfig(n, avgpool, float(lr)) for n in N_LAST_BLOCKS if n <= n_blocks_available
            for avgpool in (False, True) if has_patch_mean or not avgpool
            for lr in learning_rates]


def linear_input(blocks: Sequence[np.ndarray], patch_mean: np.ndarray | None, n_blocks: int,
                 avgpool: bool) -> np.ndarray:
    """FG-BMK's ``create_linear_input``: the class tokens of the last ``n_blocks`` blocks
    (``blocks`` lists them earliest first), then the last block's patch-token mean."""
    parts = list(blocks[-n_blocks:])
    if avgpool:
        if patch_mean is None:
            raise FeatkitError("an avgpool head needs the patch-token mean")
        parts.append(patch_mean)
    return np.concatenate(parts, axis=1).astype(np.float32, copy=False)


# --------------------------------------------------------------------------- training


@dataclass
class TrainedHeads:
    """The trained grid: ``weights[i]``/``biases[i]`` of ``configs[i]`` (torch tensors)."""

    configs: list[HeadConfig]
    weights: list
    biases: list
    batch_size: int
    world_size: int
    iterations: int
    optimizer: str

    def names(self) -> list[str]:
        return [c.name(self.batch_size, self.world_size) for c in self.configs]


def _inputs_by_config(blocks: Sequence[np.ndarray], patch_mean: np.ndarray | None,
                      configs: Sequence[HeadConfig], device) -> dict[tuple[int, bool], object]:
    import torch

    keys = dict.fromkeys((c.n_blocks, c.avgpool) for c in configs)
    return {key: torch.from_numpy(linear_input(blocks, patch_mean, *key)).to(device)
            for key in keys}


def _init_heads(configs: Sequence[HeadConfig], dims: Mapping[tuple[int, bool], int],
                out_dim: int, seed: int, device):
    """Weights ~ N(0, 0.01) from one seeded generator, in grid order; biases zero."""
    import torch

    generator = torch.Generator().manual_seed(int(seed))
    weights, biases = [], []
    for c in configs:
        w = torch.empty(out_dim, dims[(c.n_blocks, c.avgpool)])
        w.normal_(mean=0.0, std=INIT_STD, generator=generator)
        weights.append(w.to(device).requires_grad_(True))
        biases.append(torch.zeros(out_dim, device=device, requires_grad=True))
    return weights, biases


def _optimizer(name: str, weights, biases, configs, batch_size: int, world_size: int,
               iterations: int):
    import torch

    groups = [{"params": [w, b], "lr": scale_lr(c.lr, batch_size, world_size)}
              for w, b, c in zip(weights, biases, configs)]
    if name == "adam":
        opt = torch.optim.Adam(groups, weight_decay=0)
    elif name == "sgd":
        opt = torch.optim.SGD(groups, momentum=SGD_MOMENTUM, weight_decay=0)
    else:
        raise FeatkitError(f"FG-BMK optimizer must be adam or sgd, got {name!r}")
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, iterations, eta_min=0)


def train_heads(kind: str, blocks: Sequence[np.ndarray], patch_mean: np.ndarray | None,
                configs: Sequence[HeadConfig], steps: np.ndarray, *, labels: np.ndarray | None = None,
                out_dim: int, optimizer: str, batch_size: int, world_size: int = 1,
                seed: int = 0, device: str | None = None, progress: bool = False) -> TrainedHeads:
    """Train every head of the grid together, as FG-BMK does (one loss summed over heads).

    ``kind="linear"``: ``steps`` is ``iterations x batch`` (:func:`draw_batches`), the loss
    cross-entropy against ``labels``; ``kind="triplet"``: ``steps`` is ``iterations x 3 x
    batch`` (:func:`draw_triplets`), the loss ``F.triplet_margin_loss`` (margin 1)."""
    import torch
    import torch.nn.functional as F

    from featkit._device import torch_device

    for i, b in enumerate(blocks):
        check_finite(b, f"FG-BMK block {i} features")
    dev = torch_device(device)
    inputs = _inputs_by_config(blocks, patch_mean, configs, dev)
    dims = {key: int(x.shape[1]) for key, x in inputs.items()}
    weights, biases = _init_heads(configs, dims, out_dim, seed, dev)
    opt, schedule = _optimizer(optimizer, weights, biases, configs, batch_size, world_size,
                               len(steps))
    target = None if labels is None else torch.from_numpy(np.asarray(labels, np.int64)).to(dev)
    for step in progress_bar(range(len(steps)), progress, f"FG-BMK {kind} heads"):
        index = torch.from_numpy(steps[step].reshape(-1)).to(dev)
        batch = {key: x[index] for key, x in inputs.items()}
        losses = []
        for c, w, b in zip(configs, weights, biases):
            out = F.linear(batch[(c.n_blocks, c.avgpool)], w, b)
            if kind == "linear":
                losses.append(F.cross_entropy(out, target[index]))
            else:
                losses.append(F.triplet_margin_loss(*out.chunk(3), margin=TRIPLET_MARGIN))
        loss = sum(losses)
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    return TrainedHeads(list(configs), [w.detach() for w in weights],
                        [b.detach() for b in biases], batch_size, world_size, len(steps),
                        optimizer)


def _apply(heads: TrainedHeads, i: int, inputs) -> object:
    import torch.nn.functional as F

    c = heads.configs[i]
    return F.linear(inputs[(c.n_blocks, c.avgpool)], heads.weights[i], heads.biases[i])


def select_on_test(scores: Sequence[float]) -> int | None:
    """FG-BMK's choice: the first head whose test score is strictly above every earlier one
    (and above 0); None when no head scores above 0."""
    best, chosen = 0.0, None
    for i, score in enumerate(scores):
        if score > best:
            best, chosen = score, i
    return chosen


# --------------------------------------------------------------------------- linear protocol


@dataclass(frozen=True)
class HeadScore:
    """One head's test scores (fractions)."""

    name: str
    n_blocks: int
    avgpool: bool
    lr: float
    scaled_lr: float
    scores: dict[str, float]


@dataclass(frozen=True)
class FgbmkResult:
    """The grid's test scores and FG-BMK's selection; ``metrics`` are the selected head's
    (zeros, and ``selected`` None, when no head scores above 0, as in FG-BMK)."""

    protocol: str
    heads: list[HeadScore]
    selected: str | None
    metrics: dict[str, float]
    counts: dict[str, int]
    settings: dict[str, object] = field(default_factory=dict)
    departures: tuple[str, ...] = ()


def _head_scores(heads: TrainedHeads, per_head: list[dict[str, float]]) -> list[HeadScore]:
    return [HeadScore(name, c.n_blocks, c.avgpool, c.lr,
                      scale_lr(c.lr, heads.batch_size, heads.world_size), scores)
            for name, c, scores in zip(heads.names(), heads.configs, per_head)]


def fgbmk_linear(train_blocks: Sequence[np.ndarray], train_labels: np.ndarray,
                 test_blocks: Sequence[np.ndarray], test_labels: np.ndarray, *,
                 train_patch_mean: np.ndarray | None = None,
                 test_patch_mean: np.ndarray | None = None,
                 num_classes: int | None = None,
                 learning_rates: Sequence[float] = LEARNING_RATES,
                 iterations: int = ITERATIONS, batch_size: int = BATCH_SIZE,
                 world_size: int = 1, optimizer: str = LINEAR_OPTIMIZER, seed: int = 0,
                 device: str | None = None, progress: bool = False) -> FgbmkResult:
    """FG-BMK's linear evaluation (``eval_linear.py``): the head grid trained with
    cross-entropy, each head's test top-1/top-5 (micro), the best on test reported."""
    import torch

    train_labels = np.asarray(train_labels, np.int64)
    test_labels = np.asarray(test_labels, np.int64)
    if train_labels.ndim != 1 or test_labels.ndim != 1:
        raise FeatkitError("FG-BMK's linear evaluation reads one integer label per image "
                           "(its Dataset class); multi-label data has no FG-BMK linear score")
    classes = max(int(train_labels.max()) + 1, num_classes or 0)
    configs = head_grid(len(train_blocks), train_patch_mean is not None, learning_rates)
    steps = draw_batches(len(train_labels), batch_size, iterations, seed)
    heads = train_heads("linear", train_blocks, train_patch_mean, configs, steps,
                        labels=train_labels, out_dim=classes, optimizer=optimizer,
                        batch_size=batch_size, world_size=world_size, seed=seed, device=device,
                        progress=progress)
    dev = heads.weights[0].device
    inputs = _inputs_by_config(test_blocks, test_patch_mean, configs, dev)
    y = torch.from_numpy(test_labels).to(dev)
    k = min(5, classes)
    per_head = []
    with torch.no_grad():
        for i in range(len(configs)):
            logits = _apply(heads, i, inputs)
            top = logits.topk(k, dim=1).indices
            per_head.append({
                "top1": float((logits.argmax(1) == y).double().mean()),
                "top5": float((top == y[:, None]).any(1).double().mean()),
            })
    chosen = select_on_test([s["top1"] for s in per_head])
    metrics = dict(per_head[chosen]) if chosen is not None else {"top1": 0.0, "top5": 0.0}
    return FgbmkResult(
        "fgbmk-linear", _head_scores(heads, per_head),
        None if chosen is None else heads.names()[chosen], metrics,
        {"train": len(train_labels), "test": len(test_labels), "heads": len(configs)},
        _settings(heads, learning_rates, seed), LINEAR_DEPARTURES,
    )


def _settings(heads: TrainedHeads, learning_rates, seed: int) -> dict[str, object]:
    return {"learning_rates": list(learning_rates), "iterations": heads.iterations,
            "batch_size": heads.batch_size, "world_size": heads.world_size,
            "optimizer": heads.optimizer, "init_std": INIT_STD, "schedule": "cosine to 0",
            "seed": seed, "selection": "best head on test"}


# --------------------------------------------------------------------------- retrieval protocol


def pairwise_similarity(query, gallery):
    """``-F.pairwise_distance`` of every query/gallery pair (eps 1e-6 added to each coordinate
    difference), computed with one matrix product instead of an M x N x D tensor."""
    import torch

    eps = PAIRWISE_EPS
    sq = (query * query).sum(1, keepdim=True) + 2 * eps * query.sum(1, keepdim=True)
    sg = (gallery * gallery).sum(1)[None, :] - 2 * eps * gallery.sum(1)[None, :]
    d2 = sq + sg - 2 * query @ gallery.T + query.shape[1] * eps * eps
    return -torch.sqrt(torch.clamp(d2, min=0.0))


def class_probabilities(similarity, gallery_labels: LabelSets, k: int = NEIGHBOURS):
    """FG-BMK's class scores: each class takes the similarity of its nearest neighbour among
    the ``k`` nearest gallery items (``ABSENT_CLASS_LOGIT`` if none), softmaxed."""
    import torch

    k = min(k, similarity.shape[1])
    values, indices = similarity.topk(k, dim=1)
    m = similarity.shape[0]
    logits = torch.full((m, gallery_labels.num_classes), ABSENT_CLASS_LOGIT,
                        device=similarity.device, dtype=similarity.dtype)
    indptr = torch.from_numpy(gallery_labels.indptr).to(similarity.device)
    flat = torch.from_numpy(gallery_labels.indices).to(similarity.device)
    for i in range(k - 1, -1, -1):  # nearer neighbours overwrite farther ones
        items = indices[:, i]
        start, stop = indptr[items], indptr[items + 1]
        counts = stop - start
        rows = torch.repeat_interleave(torch.arange(m, device=similarity.device), counts)
        offsets = torch.arange(int(counts.sum()), device=similarity.device) - torch.repeat_interleave(
            torch.cumsum(counts, 0) - counts, counts)
        cols = flat[torch.repeat_interleave(start, counts) + offsets]
        logits[rows, cols] = torch.repeat_interleave(values[:, i], counts)
    return logits.softmax(-1)


def rank_metrics(probabilities, targets, ks: Sequence[int] = RECALL_KS) -> dict[str, object]:
    """Per-batch sums of FG-BMK's ranking metrics: the AP of the true classes in the class
    ranking (ties: lower class index first) and the per-class tp/fn/fp of the top-k classes.
    ``targets`` is the batch's 0/1 class matrix."""
    import torch

    order = torch.argsort(-probabilities, dim=1, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    relevant = targets > 1e-3
    count = relevant.sum(1)
    out: dict[str, object] = {}
    most = int(count.max()) if len(count) else 0
    if most:
        n_classes = order.shape[1]
        masked = torch.where(relevant, rank, torch.full_like(rank, n_classes))
        first = masked.topk(most, dim=1, largest=False, sorted=True).values
        valid = first < n_classes
        j = torch.arange(1, most + 1, device=rank.device, dtype=torch.float64)
        precision = torch.where(valid, j / (first.double() + 1.0), torch.zeros_like(j))
        has = count > 0
        ap = precision.sum(1)[has] / count[has].double()
        out["ap_sum"], out["n_query"] = float(ap.sum()), int(has.sum())
    else:
        out["ap_sum"], out["n_query"] = 0.0, 0
    for k in ks:
        k_eff = min(k, order.shape[1])
        predicted = rank < k_eff
        out[f"tp@{k}"] = (predicted & relevant).sum(0).double()
        out[f"fn@{k}"] = (~predicted & relevant).sum(0).double()
        out[f"fp@{k}"] = (predicted & ~relevant).sum(0).double()
    return out


def macro_recall(tp, fn, fp, k: int) -> float:
    """torchmetrics' macro recall: mean of tp / (tp + fn) over the classes that count (k = 1:
    those with any tp, fp or fn; k > 1: those with queries)."""
    import torch

    score = torch.where(tp + fn > 0, tp / torch.clamp(tp + fn, min=1), torch.zeros_like(tp))
    weight = (tp + fp + fn > 0) if k == 1 else (tp + fn > 0)
    weight = weight.double()
    return float((weight * score).sum() / weight.sum()) if float(weight.sum()) else 0.0


def fgbmk_retrieval(train_blocks: Sequence[np.ndarray], train_labels: LabelSets,
                    test_blocks: Sequence[np.ndarray], test_labels: LabelSets, *,
                    train_patch_mean: np.ndarray | None = None,
                    test_patch_mean: np.ndarray | None = None,
                    learning_rates: Sequence[float] = LEARNING_RATES,
                    iterations: int = ITERATIONS, batch_size: int = BATCH_SIZE,
                    world_size: int = 1, embed_dim: int = EMBED_DIM,
                    gallery_size: int = GALLERY_SIZE, neighbours: int = NEIGHBOURS,
                    optimizer: str = RETRIEVAL_OPTIMIZER, seed: int = 0,
                    query_chunk: int = 1024, device: str | None = None,
                    progress: bool = False) -> FgbmkResult:
    """FG-BMK's retrieval evaluation (``eval_retrieval.py``): projection heads trained with a
    triplet loss on the even classes of train, each head scored on the test queries against a
    random train gallery, the head with the best test recall@1 reported."""
    import torch

    num_classes = max(train_labels.num_classes, test_labels.num_classes)
    train_labels = LabelSets(train_labels.indptr, train_labels.indices, num_classes)
    test_labels = LabelSets(test_labels.indptr, test_labels.indices, num_classes)
    known, known_labels = known_rows(train_labels)
    if len(known) == 0:
        raise FeatkitError("FG-BMK's retrieval head trains on the even-numbered classes; the "
                           "train split has none")
    configs = head_grid(len(train_blocks), train_patch_mean is not None, learning_rates)
    steps = draw_triplets(known_labels, batch_size, iterations, seed)
    heads = train_heads(
        "triplet", [b[known] for b in train_blocks],
        None if train_patch_mean is None else train_patch_mean[known], configs, steps,
        out_dim=embed_dim, optimizer=optimizer, batch_size=batch_size, world_size=world_size,
        seed=seed, device=device, progress=progress)
    dev = heads.weights[0].device
    gallery = gallery_rows(len(train_labels), gallery_size, seed)
    gallery_inputs = _inputs_by_config(
        [b[gallery] for b in train_blocks],
        None if train_patch_mean is None else train_patch_mean[gallery], configs, dev)
    gallery_sets = train_labels.rows(gallery)
    query_inputs = _inputs_by_config(test_blocks, test_patch_mean, configs, dev)
    n_query = len(test_labels)
    per_head = []
    with torch.no_grad():
        for i in progress_bar(range(len(configs)), progress, "FG-BMK retrieval scoring"):
            g = _apply(heads, i, gallery_inputs)
            q_all = _apply(heads, i, query_inputs)
            sums: dict[str, object] = {}
            for start in range(0, n_query, query_chunk):
                rows = np.arange(start, min(n_query, start + query_chunk))
                probs = class_probabilities(pairwise_similarity(q_all[rows], g), gallery_sets,
                                            neighbours)
                targets = torch.from_numpy(test_labels.dense(rows)).to(dev)
                for key, value in rank_metrics(probs, targets).items():
                    sums[key] = value if key not in sums else sums[key] + value
            scores = {"mAP": sums["ap_sum"] / sums["n_query"] if sums["n_query"] else 0.0}
            for k in RECALL_KS:
                scores[f"recall@{k}"] = macro_recall(sums[f"tp@{k}"], sums[f"fn@{k}"],
                                                     sums[f"fp@{k}"], k)
            per_head.append(scores)
    chosen = select_on_test([s["recall@1"] for s in per_head])
    zero = {"mAP": 0.0, **{f"recall@{k}": 0.0 for k in RECALL_KS}}
    metrics = dict(per_head[chosen]) if chosen is not None else zero
    settings = {**_settings(heads, learning_rates, seed), "embed_dim": embed_dim,
                "triplet_margin": TRIPLET_MARGIN, "gallery_size": int(len(gallery)),
                "neighbours": neighbours, "momentum": SGD_MOMENTUM if optimizer == "sgd" else None,
                "selection": "best recall@1 on test"}
    counts = {"train": len(train_labels), "train_known": int(len(known)),
              "gallery": int(len(gallery)), "test": n_query, "heads": len(configs)}
    return FgbmkResult("fgbmk-retrieval", _head_scores(heads, per_head),
                       None if chosen is None else heads.names()[chosen], metrics, counts,
                       settings, RETRIEVAL_DEPARTURES)


def iter_heads(result: FgbmkResult) -> Iterator[dict[str, object]]:
    """The grid as plain rows (for records and tables)."""
    for h in result.heads:
        yield {"name": h.name, "n_blocks": h.n_blocks, "avgpool": h.avgpool, "lr": h.lr,
               "scaled_lr": h.scaled_lr, **h.scores, "selected": h.name == result.selected}
