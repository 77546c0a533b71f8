"""Probing every layer: the linear or kNN probe on ``cls@L`` (or ``patch_mean@L``,
``last_token@L``) for each layer L, one accuracy-vs-depth curve per model and dataset ("where is
fine-grained information lost?", generalising FG-BMK Table 4's original-vs-aligned comparison).

Each layer is probed exactly as the single-kind task probes one kind (the linear task's C sweep
on val and refit, or the kNN task's bank), so the point at layer L is the record ``featkit probe
linear --features cls@L`` writes. The curve record (task ``"layer_probe"``) holds each layer's
headline numbers; the layer kinds come from one ``featkit extract --layers`` run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from featkit.errors import FeatkitError
from featkit.tasks import knn, linear
from featkit.tasks.loading import FeatureSource
from featkit.tasks.registry import TaskInfo, register
from featkit.tasks.settings import check_choice

INFO = register(TaskInfo(
    name="layer_probe", title="probe by layer", headline=(),
    columns=("best_top1", "last_top1"), module=__name__,
))
PROBES = ("linear", "knn")


@dataclass(frozen=True)
class Settings:
    """``probe``: ``"linear"`` (with ``linear``'s settings) or ``"knn"`` (with ``knn``'s);
    ``layers``: ``"all"`` (every block of the tower the kind belongs to) or block numbers
    (1 = the first, -1 = the last). Merged label spaces are not probed by layer."""

    probe: str = "linear"
    layers: str | tuple[int, ...] = "all"
    linear: linear.Settings = field(default_factory=linear.Settings)
    knn: knn.Settings = field(default_factory=knn.Settings)

    def __post_init__(self) -> None:
        from extractors.layers import parse_layers

        check_choice(INFO.name, "--probe", self.probe, PROBES)
        object.__setattr__(self, "layers", parse_layers(self.layers))
        if self.linear.merge or self.knn.merge:
            raise FeatkitError(f"{INFO.name}: --merge is not probed by layer; probe one dataset "
                               f"at a time")
        if self.linear.ci is not None or self.knn.ci is not None:
            from featkit.tasks.intervals import refuse_interval

            raise refuse_interval(INFO.name, "the depth curve carries no per-layer intervals "
                                  "yet; probe the layers you want with --features cls@L --ci")


@dataclass
class Outcome:
    """The curve records (one per dataset) and every layer's own probe record."""

    records: list[dict[str, Any]]
    layer_records: list[dict[str, Any]]


def layer_kinds(source: FeatureSource, layers: str | tuple[int, ...]) -> list[tuple[str, int, int]]:
    """``(kind, block, depth)`` for each layer of ``source.features`` (a per-layer kind such as
    ``cls``): the kind name read from the cache, its 1-based block and the tower's depth."""
    from extractors import get_spec
    from extractors.layers import block_index, expand_layers, split_kind

    base, layer = split_kind(source.features)
    spec = get_spec(source.model)
    if layer is not None or base not in spec.layers:
        raise FeatkitError(
            f"{INFO.name}: --features names the per-layer kind to probe by layer, one of "
            f"{', '.join(spec.layers) or 'none for ' + spec.name} (got {source.features!r})")
    depth = spec.layers[base].depth
    if depth is None:
        raise FeatkitError(f"{INFO.name}: the depth of {spec.name} is not known before loading it "
                           f"(its config is not here); pass its local directory as the model")
    kinds = expand_layers(spec.layers, layers, model=spec.name, bases=[base])
    return [(kind, block_index(kind, split_kind(kind)[1], depth) + 1, depth) for kind in kinds]


def _probe(source: FeatureSource, dataset: str, settings: Settings, progress: bool
           ) -> dict[str, Any]:
    if settings.probe == "linear":
        return linear.run(source, [dataset], settings.linear, progress=progress).records[0]
    return knn.run(source, [dataset], settings.knn, progress=progress)[0]


def _probe_layer(source: FeatureSource, dataset: str, kind: str, block: int, depth: int,
                 settings: Settings, progress: bool) -> dict[str, Any]:
    """The probe record of one layer, read under the name asked for. :func:`featkit.load` finds
    a block stored under its other name (``cls@-1`` / ``cls@12`` of a 12-block tower) from the
    file's ``layer_depths``; files written before that attribute existed are tried under the
    other name here."""
    from extractors.layers import layer_kind, split_kind
    from featkit.errors import UnknownNameError

    base = split_kind(kind)[0]
    names = list(dict.fromkeys([kind, layer_kind(base, block), layer_kind(base, block - depth - 1)]))
    for name in names[:-1]:
        try:
            return _probe(replace(source, features=name), dataset, settings, progress)
        except UnknownNameError:
            continue
    return _probe(replace(source, features=names[-1]), dataset, settings, progress)


def run(source: FeatureSource, datasets: Sequence[str], settings: Settings | None = None, *,
        progress: bool = True) -> Outcome:
    """Probe every layer of ``source.features`` on each dataset and build the curve records
    (task ``"layer_probe"``): metrics ``best_top1``, ``last_top1`` and ``curve`` (per layer:
    ``layer``, ``kind`` (the name it was read under), ``depth``, ``relative_depth``, ``top1``,
    ``top5``, ``mean_per_class``, and the linear probe's chosen ``C``); ``best_layer`` the first
    layer of the highest top-1."""
    from featkit.results import make_result

    settings = settings or Settings()
    if not datasets:
        raise FeatkitError("--dataset names no dataset")
    kinds = layer_kinds(source, settings.layers)
    outcome = Outcome([], [])
    for dataset in datasets:
        curve, warnings = [], []
        for kind, block, depth in kinds:
            record = _probe_layer(source, dataset, kind, block, depth, settings, progress)
            outcome.layer_records.append(record)
            metrics = record["metrics"]
            curve.append({"layer": block, "kind": record["features"], "depth": depth,
                          "relative_depth": block / depth,
                          **{m: metrics.get(m) for m in ("top1", "top5", "mean_per_class")},
                          **({"C": record["settings"]["C"]} if settings.probe == "linear" else {})})
            warnings += [f"{kind}: {w}" for w in record.get("warnings", [])]
        best = max(curve, key=lambda point: point["top1"])
        last = max(curve, key=lambda point: point["layer"])
        first = outcome.layer_records[-len(kinds)]
        declared = asdict(settings.linear if settings.probe == "linear" else settings.knn)
        outcome.records.append(make_result(
            INFO.name, model=first["model"], dataset=dataset, features=source.features,
            metrics={"best_top1": best["top1"], "last_top1": last["top1"], "curve": curve},
            settings={"probe": settings.probe, "task": first["task"],
                      "layers": "all" if settings.layers == "all" else list(settings.layers),
                      "probe_settings": declared},
            provenance=first["provenance"],
            extra={"best_layer": best["layer"], "best_kind": best["kind"]},
            warnings=warnings,
        ))
    return outcome
