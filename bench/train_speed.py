"""Training step speed: the plain fp32 step against the shipped step, on the same real batches.

    .venv/bin/python bench/train_speed.py [--quick] [--model smollm2-135m] [--full]

Both steps train the same model (a LoRA adapter as `bulkner train` does by default, or all weights
with ``--full``) on the same batches of BC5CDR training examples in LLMNER format (one AdamW step
per batch, fresh weights for each step kind). *plain* runs every example's whole sequence in
fp32 (the step before the shared prefix); *shipped* is `bulkner train`'s step: the instruction
computed once per batch, bf16 autocast where the CPU has native bf16, the output head only at
answer positions. Tokens count every token of every example (prefix included) for both, so the
ratio is the wall-clock gain on the same work. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
BC5CDR_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "ner" / "bc5cdr" / "CDR_TrainingSet.PubTator.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 timed batches of 16 examples (about 2 minutes)")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--full", action="store_true", help="full fine-tune instead of LoRA r=32")
    parser.add_argument("--batches", type=int, default=None, help="timed batches per step kind (default 3 quick, 8 otherwise)")
    parser.add_argument("--batch-size", type=int, default=None, help="examples per batch (default 16 quick, 32 otherwise)")
    args = parser.parse_args()
    batches_n = args.batches or (3 if args.quick else 8)
    size = args.batch_size or (16 if args.quick else 32)

    import torch
    from transformers import AutoTokenizer

    from bulkner.hardware import cpu_has_bf16, cpu_model
    from bulkner.checkpoints import resolve_model
    from bulkner.training.train import TrainConfig, load_model
    from bulkner.training.data import TrainSource, build_examples
    from bulkner.training.step import plain_loss_sum, prefix_loss_sum

    if not BC5CDR_TRAIN.is_file():
        sys.exit(f"train_speed: {BC5CDR_TRAIN} not found (the shared data sits beside the repository)")
    model_dir = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    examples, _ = build_examples([TrainSource("pubtator", str(BC5CDR_TRAIN), documents=60)], tokenizer, 1024)
    batches = [examples[i * size : (i + 1) * size] for i in range(batches_n + 1)]  # the first one warms up
    if len(batches[-1]) < size:
        sys.exit(f"train_speed: only {len(examples)} examples for {batches_n + 1} batches of {size}")
    config = TrainConfig(model=model_dir, out="unused", sources=(TrainSource("pubtator", str(BC5CDR_TRAIN)),),
                         lora=not args.full, lora_r=32, lora_alpha=64, lora_dropout=0.0)
    device = torch.device("cpu")
    bf16 = cpu_has_bf16()

    def measure(step, autocast: bool) -> tuple[float, float]:
        torch.manual_seed(0)
        model = load_model(config, model_dir, None).train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        seconds, tokens, last = 0.0, 0, 0.0
        for index, batch in enumerate(batches):
            started = time.perf_counter()
            loss, count = step(model, batch, tokenizer.pad_token_id, device, autocast)
            (loss / count).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if index:
                seconds += time.perf_counter() - started
                tokens += sum(len(e.input_ids) for e in batch)
                last = loss.item() / count
        return tokens / seconds, last

    plain, plain_loss = measure(plain_loss_sum, autocast=False)
    shipped, shipped_loss = measure(prefix_loss_sum, autocast=bf16)
    print(json.dumps({
        "model": args.model, "mode": "full" if args.full else "lora-r32", "batches": batches_n, "batch_size": size,
        "mean_example_tokens": round(sum(len(e.input_ids) for b in batches[1:] for e in b) / (batches_n * size), 1),
        "prefix_tokens": examples[0].prefix_length, "plain_tokens_per_s": round(plain, 1),
        "tokens_per_s": round(shipped, 1), "speedup": round(shipped / plain, 2), "bf16_autocast": bf16,
        "last_loss_plain": round(plain_loss, 4), "last_loss_shipped": round(shipped_loss, 4),
        "threads": torch.get_num_threads(), "cpu": cpu_model(),
    }))


if __name__ == "__main__":
    main()
