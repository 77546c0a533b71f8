"""Worker for the adaptation tests.

``grads DATA_ROOT OUT_FILE``: as one of two processes with torchrun's environment (gloo), compute
the LoRA gradients of one global batch (:data:`GLOBAL_INDICES` of the generated CUB's caption
pairs) with DDP, all-gathered negatives and GradCache chunks of 2, and save them per rank to
``OUT_FILE.rank<N>``.

``cli ARGS...``: ``featkit ARGS`` with fault injection: ``FEATKIT_TEST_KILL_AT_STEP=K`` makes the
process SIGKILL itself while computing step K (1-based), like a preempted job.
"""

import os
import signal
import sys

import torch

#: the global batch: two pairs of each of the 4 classes (rank 0 gets the first four)
GLOBAL_INDICES = [0, 4, 8, 12, 1, 5, 9, 13]


def lora_encoder(model: str = "test:tiny-llava", *, double: bool = False, **settings):
    """A fresh tiny VLM with seeded LoRA weights in train mode: B small but non-zero (as partway
    through training), so every LoRA matrix gets gradient and gradients are O(1). ``double`` runs
    the model in float64, so that comparisons of two ways to compute the same gradient are not
    drowned in float32 rounding (the extractor rounds embeddings to float32; the loss then runs in
    float64)."""
    from extractors import load_extractor
    from featkit.adapt.config import AdaptConfig
    from featkit.adapt.train import ContrastiveEncoder, attach_lora

    extractor = load_extractor(model)
    torch.manual_seed(0)
    config = AdaptConfig(**{"lora_dropout": 0.0, "lora_r": 4, "lora_alpha": 8, **settings})
    peft_model = attach_lora(extractor, config, init_lora_weights=False)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if ".lora_B." in name:
                parameter.mul_(0.01)
    peft_model.train()
    if not double:
        return ContrastiveEncoder(extractor, peft_model), peft_model
    peft_model.double()
    extractor.dtype = torch.float64

    class DoubleEncoder(ContrastiveEncoder):
        def forward(self, query_inputs, target_inputs):
            query, target = super().forward(query_inputs, target_inputs)
            return query.double(), target.double()

    return DoubleEncoder(extractor, peft_model), peft_model


def grads(data_root: str, out_file: str) -> None:
    from featkit import distributed
    from featkit.adapt.data import caption_pairs
    from featkit.adapt.train import PairBatcher, _wrap_ddp, compute_gradients, rank_share
    from featkit.datasets import open_dataset

    torch.set_num_threads(1)
    encoder, peft_model = lora_encoder(double=True)  # before init: save_pretrained is rank-0-only once initialised
    ctx = distributed.init("cpu")
    assert ctx is not None and ctx.world_size == 2
    pairs = caption_pairs(open_dataset("cub", data_root), "train")
    ddp = _wrap_ddp(encoder, "cpu")
    batch = PairBatcher.for_extractor(pairs, encoder.extractor, chunk_size=2)(
        rank_share(GLOBAL_INDICES, ctx.rank, ctx.world_size)
    )
    output = compute_gradients(encoder, batch, symmetric=True, ddp=ddp, distributed=True)
    gradients = {n: p.grad.detach().clone() for n, p in peft_model.named_parameters() if p.requires_grad}
    torch.save({"grads": gradients, "loss": float(output.loss), "accuracy": output.accuracy},
               f"{out_file}.rank{ctx.rank}")
    torch.distributed.destroy_process_group()


def cli(args: list[str]) -> int:
    import featkit.adapt.train as train
    from featkit.cli import main

    kill_at = int(os.environ.get("FEATKIT_TEST_KILL_AT_STEP", "0"))
    compute = train.compute_gradients
    calls = [0]

    def compute_or_die(*a, **k):
        calls[0] += 1
        if calls[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return compute(*a, **k)

    train.compute_gradients = compute_or_die
    return main(args)


if __name__ == "__main__":
    if sys.argv[1] == "grads":
        grads(sys.argv[2], sys.argv[3])
    else:
        sys.exit(cli(sys.argv[2:]))
