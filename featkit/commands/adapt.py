"""``featkit adapt``: InfoNCE contrastive adaptation of a VLM with LoRA (VLM2Vec recipe)."""

from __future__ import annotations

import argparse
import os
import sys

from featkit.commands.common import device, non_negative_int, positive_int

NAME = "adapt"
HELP = "train a LoRA adapter that makes a VLM's last-token embeddings contrastive (InfoNCE)"
#: Output options checked before the work starts (see ``commands.common.check_outputs``).
OUTPUTS: dict[str, str] = {"out": "dir"}
DESCRIPTION = (
    "Adapt a vision-language model into an embedding model (seed 001 / VLM2Vec): LoRA on the "
    "language model, InfoNCE over L2-normalised last-token embeddings of image queries and text "
    "targets with in-batch negatives (temperature 0.02), AdamW at 2e-5 with a linear schedule and "
    "3% warm-up, bf16 on GPU. Pairs come from a featkit dataset (--task caption: image -> 'a photo "
    "of a <class>.'; --task vqa: image + question -> class name) or a JSONL file (--pairs). "
    "Writes a peft adapter directory with train_log.json and loss.png; pass it to "
    "'featkit extract --adapter DIR'. A killed run resumes from its last checkpoint when rerun. "
    "The same command runs on several GPUs under torchrun (negatives span all processes)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from featkit.adapt.config import DEFAULT_TEMPERATURE, AdaptConfig

    defaults = AdaptConfig()
    parser.add_argument("--model", required=True, help="VLM id or alias (hf:..., llava-1.5-7b, test:tiny-llava, ...)")
    parser.add_argument("--weights", default=None, help="local save_pretrained directory of the model (offline)")
    parser.add_argument("--out", required=True, help="output directory: the adapter, train_log.json, loss.png")
    data = parser.add_argument_group("training pairs (--dataset with --task, or --pairs)")
    data.add_argument("--dataset", default=None, help="featkit dataset to build pairs from (see 'featkit list datasets')")
    data.add_argument("--task", choices=["caption", "vqa"], default=None, help="task signal for --dataset pairs")
    data.add_argument("--split", default="train", help="dataset split to train on (default: train)")
    data.add_argument("--data-root", default=None, help="dataset root (default: $FEATKIT_DATA/<dataset> or ./data/<dataset>)")
    data.add_argument("--caption-template", default=None, help="caption task target, with {} for the class name (default: 'a photo of a {}.')")
    data.add_argument("--question", default=None, help="vqa task question (default: per dataset, e.g. 'What is the species of the bird?')")
    data.add_argument("--pairs", default=None, help="JSONL file: one {\"image\", \"query\", \"target\"} object a line")
    data.add_argument("--image-root", default=None, help="folder relative --pairs image paths start from (default: the file's folder)")
    data.add_argument("--query-instruction", default=None,
                      help="prefix of every --pairs query (default: 'Represent the given image with the following question:'; '' for none)")
    data.add_argument("--skip-bad-rows", action="store_true", help="leave out bad --pairs rows (reported) instead of stopping")
    train = parser.add_argument_group("training")
    train.add_argument("--steps", type=positive_int, default=defaults.steps, help=f"optimizer steps (default: {defaults.steps})")
    train.add_argument("--batch-size", type=positive_int, default=defaults.batch_size, help=f"pairs per process and step (default: {defaults.batch_size})")
    train.add_argument("--chunk-size", type=int, default=None, help="GradCache: embed this many pairs at a time (default: the whole batch at once)")
    train.add_argument("--lr", type=float, default=defaults.lr, help=f"peak learning rate (default: {defaults.lr:g})")
    train.add_argument("--warmup-ratio", type=float, default=defaults.warmup_ratio, help=f"linear warm-up fraction of the steps (default: {defaults.warmup_ratio:g})")
    train.add_argument("--weight-decay", type=float, default=defaults.weight_decay, help="AdamW weight decay (default: 0)")
    train.add_argument("--max-grad-norm", type=float, default=defaults.max_grad_norm, help="gradient clipping norm, 0 for none (default: 1.0)")
    train.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE, help=f"InfoNCE temperature (default: {DEFAULT_TEMPERATURE:g})")
    train.add_argument("--symmetric", action="store_true", help="add the target -> query direction to the loss")
    train.add_argument("--keep-duplicate-negatives", action="store_true",
                       help="count other pairs with the same target text as negatives (default: masked out)")
    train.add_argument("--lora-r", type=int, default=defaults.lora_r, help=f"LoRA rank (default: {defaults.lora_r})")
    train.add_argument("--lora-alpha", type=int, default=defaults.lora_alpha, help=f"LoRA alpha (default: {defaults.lora_alpha})")
    train.add_argument("--lora-dropout", type=float, default=defaults.lora_dropout, help=f"LoRA dropout (default: {defaults.lora_dropout:g})")
    train.add_argument("--lora-targets", default=defaults.lora_targets,
                       help="'language_model' (default: the LM's attention and MLP projections), 'all-linear', 're:<regex>' or comma-separated module names")
    train.add_argument("--no-gradient-checkpointing", action="store_true", help="keep activations instead of recomputing them (faster, more memory)")
    train.add_argument("--seed", type=non_negative_int, default=defaults.seed, help="seed of LoRA init, batch order and dropout (default: 0)")
    run_group = parser.add_argument_group("running")
    run_group.add_argument("--save-every", type=int, default=defaults.save_every, help=f"checkpoint every N steps (default: {defaults.save_every})")
    run_group.add_argument("--keep-checkpoints", action="store_true", help="keep the last checkpoint after the final adapter is written")
    run_group.add_argument("--overwrite", action="store_true", help="retrain even if --out holds a run (deletes its adapter, log and checkpoints)")
    run_group.add_argument("--device", type=device, default="auto", help="auto|cpu|cuda[:N] (default: auto; cuda = this process's GPU under torchrun)")
    run_group.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"], help="auto: bf16 on GPU, fp32 on CPU")
    run_group.add_argument("--image-size", type=positive_int, default=None, help="Qwen2-VL fixed square input size (default: the extractor's)")
    run_group.add_argument("--num-workers", type=non_negative_int, default=0, help="DataLoader workers preparing batches (default: 0)")
    run_group.add_argument("--no-progress", action="store_true", help="no progress bar")


def read_pairs(args: argparse.Namespace):
    """The :class:`~featkit.adapt.data.PairSet` the arguments ask for."""
    from featkit.adapt.data import VQA_INSTRUCTION, build_pairs, read_pairs_jsonl
    from featkit.datasets import open_dataset
    from featkit.errors import FeatkitError

    if bool(args.pairs) == bool(args.dataset):
        raise FeatkitError("give the training pairs as --dataset D --task caption|vqa, or as --pairs FILE.jsonl")
    if args.pairs:
        if args.task:
            raise FeatkitError("--task builds pairs from --dataset; a --pairs file holds its own queries and targets")
        instruction = VQA_INSTRUCTION if args.query_instruction is None else args.query_instruction
        pairs = read_pairs_jsonl(args.pairs, image_root=args.image_root, instruction=instruction,
                                 skip_bad_rows=args.skip_bad_rows)
        for problem in pairs.skipped:
            print(f"featkit: skipped {problem}", file=sys.stderr)
        return pairs
    if not args.task:
        raise FeatkitError("--dataset needs --task caption or --task vqa")
    dataset = open_dataset(args.dataset, args.data_root)
    return build_pairs(dataset, args.task, args.split, template=args.caption_template, question=args.question)


def config_from_args(args: argparse.Namespace):
    from featkit.adapt.config import AdaptConfig

    return AdaptConfig(
        steps=args.steps, batch_size=args.batch_size, chunk_size=args.chunk_size, lr=args.lr,
        warmup_ratio=args.warmup_ratio, weight_decay=args.weight_decay, max_grad_norm=args.max_grad_norm,
        temperature=args.temperature, symmetric=args.symmetric,
        mask_duplicate_targets=not args.keep_duplicate_negatives, lora_r=args.lora_r,
        lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, lora_targets=args.lora_targets,
        gradient_checkpointing=not args.no_gradient_checkpointing, save_every=args.save_every,
        seed=args.seed, precision=args.precision,
    )


def run(args: argparse.Namespace) -> int:
    from featkit.adapt.train import adapt, suggested_extract_command
    from featkit.distributed import launched_by_torchrun

    config = config_from_args(args)
    config.check()
    pairs = read_pairs(args)
    result = adapt(
        args.model, pairs, args.out, config=config, weights=args.weights, device=args.device,
        overwrite=args.overwrite, keep_checkpoints=args.keep_checkpoints, num_workers=args.num_workers,
        progress=not args.no_progress, image_size=args.image_size,
    )
    if launched_by_torchrun() and os.environ.get("RANK", "0") != "0":
        return 0
    summary = result.summary()
    if result.already_trained:
        print(f"{result.adapter} already holds this adapter (finished run, same settings); --overwrite retrains")
    else:
        resumed = f", resumed from step {result.resumed_from}" if result.resumed_from else ""
        print(f"trained {summary['steps']} steps{resumed}: loss {summary['first_loss']:.4f} -> {summary['final_loss']:.4f}")
    print(f"adapter: {result.adapter}\nlog: {result.log_path}" + (f"\nplot: {result.plot_path}" if result.plot_path else ""))
    print("extract with it:", suggested_extract_command(args.model, args.dataset, result, args.data_root))
    return 0
