"""``featkit embed-texts``: embed texts (class-name prompts, captions) with a VLM into a .npy file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from featkit.commands.common import device, positive_int

NAME = "embed-texts"
HELP = "embed texts with a VLM (last-token embeddings) into a .npy file"
#: Output options checked before the work starts (see ``commands.common.check_outputs``).
OUTPUTS: dict[str, str] = {"out": "file"}
DESCRIPTION = (
    "Embed texts with a vision-language model the way its images' last_token features are made "
    "(last non-padding token, L2-normalised), e.g. class-name prompts for zero-shot. Writes a "
    "float32 (N, D) .npy file and, beside it, a .json with the texts and provenance."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model id or alias (hf VLMs, test:tiny-llava, ...)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--texts", default=None, help="file with one text per line, or a .json list of strings")
    source.add_argument("--text", action="append", default=None, help="a text to embed (repeat for several)")
    parser.add_argument("--out", required=True, help="output .npy file (N x D float32)")
    parser.add_argument("--instruction", default=None, help="prefix each text with this instruction")
    parser.add_argument("--weights", default=None, help="local weights directory (offline)")
    parser.add_argument("--adapter", default=None, help="peft adapter directory to apply")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="texts per forward pass (default: 32)")
    parser.add_argument("--device", type=device, default="auto", help="auto|cpu|cuda[:N] (default: auto)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"], help="weights precision on GPU")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from extractors import load_extractor
    from featkit._device import resolve_device
    from featkit.errors import FeatkitError
    from featkit.text import embed_texts, read_texts

    texts = read_texts(args.texts) if args.texts else list(args.text)
    if not texts:
        raise FeatkitError(f"no texts to embed in {args.texts}")
    out = Path(args.out)
    if out.suffix != ".npy":
        raise FeatkitError(f"--out {args.out}: use a .npy file name")
    device = resolve_device(args.device)
    precision = args.precision if device != "cpu" else "fp32"
    extractor = load_extractor(args.model, weights=args.weights, adapter=args.adapter, device=device,
                               precision=precision)
    vectors = embed_texts(
        args.model, texts, instruction=args.instruction, batch_size=args.batch_size,
        progress=not args.no_progress, extractor=extractor,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, vectors)
    meta = {
        "model": extractor.spec.name,
        "model_alias": args.model,
        "weights": extractor.weights_identity,
        "adapter": extractor.adapter_identity,
        "instruction": args.instruction,
        "pooling": "last non-padding token, L2-normalised",
        "device": device,
        "precision": precision,
        "shape": list(vectors.shape),
        "texts": texts,
    }
    meta_path = out.with_suffix(".json")
    meta_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out} ({vectors.shape[0]} x {vectors.shape[1]}) and {meta_path}", file=sys.stderr)
    return 0
