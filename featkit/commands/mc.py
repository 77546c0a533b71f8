"""``featkit mc build|score``: multiple-choice question sets with hard negatives, and scores."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from featkit.commands.ci import add_ci, interval_from
from featkit.commands.common import (
    add_cache_dir,
    device,
    emit,
    names,
    non_negative_int,
    positive_int,
)

NAME = "mc"
HELP = "multiple-choice sets (hard negatives from CLIP, class means, a hierarchy, or random) and their scores"
#: Output options checked before the work starts (see ``commands.common.check_outputs``).
OUTPUTS: dict[str, str] = {"out": "file", "json": "file", "predictions": "file"}
DESCRIPTION = (
    "'build' writes one K-way question per image of a split as JSONL (image path, question, "
    "lettered options, answer letter, distractor source; the shape VLMEvalKit / lmms-eval style "
    "evaluators read). Distractors: clip:MODEL (the top K-1 wrong classes of MODEL's zero-shot "
    "scores of the image, seed 002's recipe), visual:MODEL (the classes whose mean MODEL image "
    "feature is nearest the true class's), hierarchy:FILE (siblings, then cousins, in a JSON "
    "child -> parent tree), or random; the answer position is shuffled with --seed. 'score' "
    "scores a model on such a file: CLIP-style models by image-option cosine, generative VLMs by "
    "each option's log-likelihood given the image and question (prefix computed once, its KV "
    "cache reused for every option), so no answer parsing is needed; --ci LEVEL adds a "
    "percentile bootstrap interval of top-1 over the questions."
)


def distractor_source(text: str) -> str:
    """argparse ``type``: clip:MODEL, visual:MODEL, hierarchy:FILE or random."""
    from featkit.errors import FeatkitError
    from featkit.tasks.mc import parse_distractors

    try:
        parse_distractors(text)
    except FeatkitError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not clip:MODEL, visual:MODEL, hierarchy:FILE or random") from None
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from featkit.tasks.mc import (
        LENGTH_NORMS,
        METHODS,
        PRECISIONS,
        TARGETS,
        BuildSettings,
        ScoreSettings,
    )

    b, s = BuildSettings, ScoreSettings
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = actions.add_parser("build", help="write a multiple-choice question set (JSONL)",
                               description=DESCRIPTION)
    build.add_argument("--dataset", required=True, help="dataset name (see 'featkit list datasets')")
    build.add_argument("--data-root", default=None,
                       help="dataset root (default: where the clip:/visual: model's cached "
                       "features were extracted from, else the dataset's default root)")
    build.add_argument("--split", default=b.split, help=f"split whose images are asked about "
                       f"(default: {b.split})")
    build.add_argument("--choices", type=positive_int, default=b.choices,
                       help=f"options per question, the answer included (default: {b.choices})")
    build.add_argument("--distractors", type=distractor_source, default=b.distractors,
                       help="clip:MODEL, visual:MODEL, hierarchy:FILE or random "
                       f"(default: {b.distractors})")
    build.add_argument("--seed", type=non_negative_int, default=b.seed,
                       help=f"seed of the answer positions and random choices (default: {b.seed})")
    build.add_argument("--limit", type=positive_int, default=None,
                       help="at most this many questions (a seeded sample of the split)")
    build.add_argument("--templates", default=b.templates,
                       help=f"clip: prompt templates for the zero-shot scores (default: {b.templates})")
    build.add_argument("--classnames", default=None,
                       help="the options' class names: a built-in list or a file (default: the "
                       "dataset's clean list)")
    build.add_argument("--features", type=names, default=None,
                       help="visual: the feature kind compared (default: visual)")
    build.add_argument("--weights", default=None,
                       help="clip:/visual: local weights the model's features were extracted with")
    build.add_argument("--device", type=device, default=None,
                       help="cpu, cuda, cuda:N or auto (default: cuda if present)")
    build.add_argument("--out", required=True, help="questions file to write (.jsonl)")
    build.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_cache_dir(build)

    score = actions.add_parser("score", help="score a model on a question set",
                               description=DESCRIPTION)
    score.add_argument("--model", required=True, help="model id or alias (see 'featkit list models')")
    score.add_argument("--questions", required=True, help="questions JSONL (featkit mc build)")
    score.add_argument("--method", default=s.method, choices=list(METHODS),
                       help="similarity (image-text cosine), likelihood (a VLM's option "
                       "log-likelihood) or auto: likelihood for VLMs (default: auto)")
    score.add_argument("--score", dest="target", default=s.target, choices=list(TARGETS),
                       help=f"likelihood of each option's text or of its letter (default: {s.target})")
    score.add_argument("--length-norm", default=s.length_norm, choices=list(LENGTH_NORMS),
                       help="token: divide a likelihood by the option's token count "
                       f"(default: {s.length_norm})")
    score.add_argument("--templates", default=s.templates,
                       help=f"similarity: prompt templates of the options (default: {s.templates})")
    score.add_argument("--batch-size", type=positive_int, default=s.batch_size,
                       help=f"likelihood: questions whose image + question prefixes run in one "
                       f"forward (default: {s.batch_size})")
    score.add_argument("--weights", default=None, help="local weights file or directory")
    score.add_argument("--adapter", default=None, help="peft adapter directory")
    score.add_argument("--device", type=device, default=None,
                       help="cpu, cuda, cuda:N or auto (default: cuda if present)")
    score.add_argument("--precision", default=s.precision, choices=list(PRECISIONS),
                       help=f"model precision on GPU (default: {s.precision})")
    score.add_argument("--json", default=None, help="write the result record to this JSON file")
    score.add_argument("--predictions", default=None,
                       help="per-question predictions (JSONL; default: next to --json as "
                       "<name>.predictions.jsonl, else next to the questions)")
    add_ci(score, unit="questions")
    score.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_cache_dir(score)


def mc_table(record: dict[str, Any]) -> str:
    """The readable summary of a multiple-choice record, with the interval of --ci."""
    from featkit.results import metrics_table
    from featkit.tasks.intervals import interval_lines

    settings = record["settings"]
    how = (f"likelihood of the {settings['score']} (length norm {settings['length_norm']})"
           if settings["method"] == "likelihood" else f"cosine, templates {settings['templates']}")
    return (f"{record['model']} on {record['dataset']} multiple choice "
            f"({record['counts']['questions']} questions, {'/'.join(map(str, settings['choices']))} "
            f"options, distractors {', '.join(settings['distractors'])}), {how}\n"
            + metrics_table(record) + interval_lines(record))


def _predictions_path(args: argparse.Namespace, model: str) -> Path:
    if args.predictions:
        return Path(args.predictions)
    if args.json:
        path = Path(args.json)
        return path.with_name(path.stem + ".predictions.jsonl")
    from featkit.cache import slug

    questions = Path(args.questions)
    return questions.with_name(f"{questions.stem}.{slug(model)}.predictions.jsonl")


def run(args: argparse.Namespace) -> int:
    from featkit.results import format_table
    from featkit.tasks import mc

    if args.action == "build":
        settings = mc.BuildSettings(
            choices=args.choices, distractors=args.distractors, seed=args.seed, split=args.split,
            limit=args.limit, templates=args.templates, class_names=args.classnames,
            features=args.features, weights=args.weights, device=args.device)
        rows = mc.build(args.dataset, args.out, settings, data_root=args.data_root,
                        cache_dir=args.cache_dir, progress=not args.no_progress)
        shown = [{"question": r["question_id"], "answer": r["answer"],
                  "options": " | ".join(r["options"])} for r in rows[:3]]
        print(f"{len(rows)} questions, {args.choices} options each, distractors "
              f"{args.distractors}, seed {args.seed}")
        print(format_table(shown))
        print(f"wrote {args.out}", file=sys.stderr)
        return 0
    settings = mc.ScoreSettings(method=args.method, target=args.target,
                                length_norm=args.length_norm, templates=args.templates,
                                device=args.device, precision=args.precision,
                                batch_size=args.batch_size, ci=interval_from(args))
    scored = mc.score(args.model, args.questions, settings, weights=args.weights,
                      adapter=args.adapter, cache_dir=args.cache_dir,
                      progress=not args.no_progress)
    predictions = _predictions_path(args, scored.record["model"])
    scored.record["predictions_file"] = str(mc.write_jsonl(scored.predictions, predictions))
    emit(scored.record, mc_table(scored.record), args.json)
    print(f"wrote {predictions}", file=sys.stderr)
    return 0
