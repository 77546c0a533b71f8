"""``featkit list models|datasets``."""

from __future__ import annotations

import argparse

NAME = "list"
HELP = ("list models (alias, id, kinds and dims, input size, weights and whether they are here offline, "
        "the options and adapters they accept) or datasets")


#: Output options checked before the work starts (see ``commands.common.check_outputs``).
OUTPUTS: dict[str, str] = {}
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", choices=["models", "datasets"], help="what to list")


def run(args: argparse.Namespace) -> int:
    from featkit.results import format_table

    if args.what == "datasets":
        from featkit.datasets import list_datasets

        rows = [{"dataset": name, "description": text} for name, text in list_datasets().items()]
        print(format_table(rows, ["dataset", "description"]))
        return 0

    from extractors import ALIASES, families, get_spec

    fams = families()
    by_id: dict[str, list[str]] = {}
    for alias, model_id in ALIASES.items():
        by_id.setdefault(model_id, []).append(alias)
    specs = {}
    for family in fams.values():
        for spec in family.specs():
            specs[spec.name] = spec
    for model_id in by_id:
        if model_id not in specs:
            try:
                specs[model_id] = get_spec(model_id)
            except Exception:  # an alias whose library is not installed: show it anyway
                specs[model_id] = None
    rows = []
    for model_id, spec in specs.items():
        row = {"alias": ", ".join(sorted(by_id.get(model_id, []))), "id": model_id}
        if spec is None:
            row.update(kinds="?", layers="?", input="?", weights="?", offline="?", options="?",
                       notes="library not installed")
        else:
            row["kinds"] = ", ".join(f"{k}={d if d else '?'}" for k, d in spec.kinds.items())
            row["layers"] = _layers(spec.layers)
            row["input"] = f"{spec.preprocessing.size}px" if spec.preprocessing else "-"
            row["weights"] = spec.weights
            row["offline"] = {True: "yes", False: "no", None: "?"}[fams[spec.family].weights_available(spec)]
            family = fams[spec.family]
            accepted = [o.name for o in family.options_for(spec)]
            accepted += ["--adapter"] if family.accepts_adapter_for(spec) else []
            row["options"] = ", ".join(accepted) or "-"
            row["notes"] = spec.notes
        rows.append(row)
    print(format_table(rows, ["alias", "id", "kinds", "layers", "input", "weights", "offline", "options",
                              "notes"]))
    from extractors.hf import architectures

    print("\nhf architectures (any checkpoint of these loads as hf:<hub id or directory>):")
    print(format_table([{"architecture": description, "transformers class": name}
                        for description, name in architectures()],
                       ["architecture", "transformers class"]))
    return 0


def _layers(layers) -> str:
    """``cls,patch_mean@1..24; last_token@1..32``: the layer kinds ``--layers`` can extract."""
    groups: dict[str, list[str]] = {}
    for base, span in layers.items():
        groups.setdefault(span.describe(), []).append(base)
    return "; ".join(f"{','.join(bases)}@{blocks}" for blocks, bases in groups.items()) or "-"
