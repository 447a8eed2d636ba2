"""Supervised fine-tuning of a causal LM on LLMNER targets: full weights or a LoRA adapter.

A plain PyTorch loop: AdamW, linear warmup then linear decay, length-grouped padded batches
bounded by a token budget, each batch sharing one instruction prefix that is computed once
(``train_step.prefix_loss_sum``), the output head only at answer positions, gradient
accumulation (loss averaged over the answer tokens of the whole accumulated step), gradient
clipping, bf16 autocast over fp32 weights on CUDA and on CPUs with native bf16. The batch plan of every epoch is a
pure function of ``(seed, epoch)``, so a run resumed from ``checkpoint-<step>`` (weights,
optimizer, scheduler and RNG states) sees exactly the batches an uninterrupted run would.

Output directory::

    train_log.jsonl          one JSON line per optimizer step (and per evaluation)
    checkpoint-<step>/       model or adapter + trainer_state.pt (the last ``keep_checkpoints``)
    epoch-<n>/               model or adapter after epoch n (all but the last; for a learning curve)
    final/                   LoRA adapter (peft, vLLM) or full model + tokenizer; training.json

Use::

    config = TrainConfig(model="smollm2-135m", out="runs/cdr", sources=("pubtator:CDR_TrainingSet.PubTator.txt",))
    stats = train(config, progress=True, resume=False)   # then: bulkner run --adapter runs/cdr/final
"""

from __future__ import annotations

import bisect
import importlib.util
import itertools
import json
import logging
import os
import platform
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bulkner.checkpoints import resolve_model
from bulkner.hardware import cpu_has_bf16, cpu_model
from bulkner.tagging import DEFAULT_FORMAT, FORMATS
from bulkner.training.data import Example, TrainSource, batch_plan, build_examples, split_eval
from bulkner.training.step import plain_loss_sum, prefix_loss_sum

logger = logging.getLogger(__name__)
_INSTALL = "training needs torch, peft and accelerate: pip install 'bulkner[train]'"


@dataclass
class TrainConfig:
    """Everything a training run depends on (saved in ``final/training.json``)."""

    model: str
    """Base model: alias, local directory or hub id (``resolve_model``)."""
    out: str
    """Output directory (logs, checkpoints, ``final/``)."""
    sources: tuple[TrainSource, ...]
    """Gold corpora; each keeps its own type list in its prompts."""
    types_file: str | None = None
    """JSON ``{"Name": "definition"}`` for types that are not presets (e.g. CMeEE's codes)."""
    dense_lexicon: str | None = None
    """VANER's dense knowledge-base samples: a lexicon file (``bulkner lexicon``; the shipped
    ``bulkner/data/lexicon-v1.json``) from which each source gets, per training sentence, one more
    sample listing ``dense_names`` shuffled names of its types and of other types (``bulkner.training.lexicon``)."""
    dense_names: int = 6
    """Names per dense sample, about half of the source's types."""
    lora: bool = True
    """Train a LoRA adapter (True) or all weights (False)."""
    lora_r: int = 16
    """LoRA rank (vLLM serves ranks up to 512)."""
    lora_alpha: int = 32
    """LoRA scaling numerator (scale = alpha / r)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input."""
    lora_targets: str | tuple[str, ...] = "all-linear"
    """Module names that get adapters; ``all-linear`` = every linear projection but the output head."""
    init_adapter: str | None = None
    """Start from this LoRA adapter's weights (a run's ``final/``, or the shipped default) with a
    fresh schedule: a longer run in stages. Its rank, alpha and targets replace ``lora_*``."""
    epochs: int = 3
    """Passes over the training examples."""
    max_steps: int | None = None
    """End after this many optimizer steps, the learning rate decayed to 0 there (None: all epochs).
    It may differ on ``--resume``: a run that turns out too slow is shortened from its checkpoint
    and still ends cooled down."""
    lr: float = 2e-4
    """Peak learning rate after warmup (LoRA; a full fine-tune wants ~1e-4 or less)."""
    batch_size: int = 64
    """Most examples per forward pass."""
    max_batch_tokens: int = 4096
    """Most padded suffix tokens (rows x longest sentence + answer) per forward pass: bounds memory
    (32 of the longest BC5CDR examples ran a 24 GiB machine out of memory)."""
    grad_accum: int = 1
    """Forward passes per optimizer step."""
    max_length: int = 1024
    """Longest prompt + answer in tokens; as ``max_model_len`` at inference (longer are skipped)."""
    warmup_ratio: float = 0.03
    """Fraction of the optimizer steps spent warming the learning rate up from 0."""
    weight_decay: float = 0.0
    """AdamW weight decay (not applied to biases and norms)."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm; 0 turns clipping off."""
    seed: int = 0
    """Seed of the eval split, the batch order and the weights' random init (LoRA, dropout)."""
    save_every: int = 200
    """Write ``checkpoint-<step>`` every this many optimizer steps; 0 = none (``final/`` always)."""
    keep_checkpoints: int = 2
    """Most recent checkpoints kept on disk."""
    eval_fraction: float | None = None
    """Fraction of examples held out for an eval loss after each epoch; None = no eval."""
    bf16: bool = True
    """bf16 autocast (weights stay fp32) on CUDA and on CPUs with native bf16 (``avx512_bf16``,
    ``amx_bf16``); fp32 on other CPUs, where bf16 is slower."""
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu`` or ``cuda[:N]``."""
    limit: int | None = None
    """Use at most this many examples (smoke tests); None = all."""
    answer_format: str = DEFAULT_FORMAT
    """How the answers are written (``bulkner.tagging.FORMATS``); recorded in ``training.json``,
    where ``bulkner run`` reads it."""

    def __post_init__(self) -> None:
        self.sources = tuple(TrainSource.parse(s) if isinstance(s, str) else s for s in self.sources)
        checks = [
            (bool(self.model), f"model must be non-empty, got {self.model!r}"),
            (bool(self.out), f"out must be non-empty, got {self.out!r}"),
            (bool(self.sources), "at least one training source is needed"),
            (self.lora_r >= 1 and self.lora_alpha >= 1, f"lora_r and lora_alpha must be >= 1, got {self.lora_r}, {self.lora_alpha}"),
            (self.dense_names >= 1, f"dense_names must be >= 1, got {self.dense_names}"),
            (0 <= self.lora_dropout < 1, f"lora_dropout must be in [0, 1), got {self.lora_dropout}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.max_steps is None or self.max_steps >= 1, f"max_steps must be >= 1 or None, got {self.max_steps}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.batch_size >= 1 and self.grad_accum >= 1, f"batch_size and grad_accum must be >= 1, got {self.batch_size}, {self.grad_accum}"),
            (self.max_batch_tokens >= 64, f"max_batch_tokens must be >= 64, got {self.max_batch_tokens}"),
            (self.max_length >= 64, f"max_length must be >= 64, got {self.max_length}"),
            (0 <= self.warmup_ratio < 1, f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}"),
            (self.weight_decay >= 0 and self.max_grad_norm >= 0, "weight_decay and max_grad_norm must be >= 0"),
            (self.save_every >= 0, f"save_every must be >= 0, got {self.save_every}"),
            (self.keep_checkpoints >= 1, f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}"),
            (self.eval_fraction is None or 0 < self.eval_fraction < 1, f"eval_fraction must be in (0, 1) or None, got {self.eval_fraction}"),
            (self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda"), f"device must be auto, cpu or cuda[:N], got {self.device!r}"),
            (self.limit is None or self.limit >= 1, f"limit must be >= 1 or None, got {self.limit}"),
            (self.init_adapter is None or self.lora, "init_adapter continues a LoRA adapter: it cannot go with a full fine-tune"),
            (self.answer_format in FORMATS, f"answer_format must be one of {', '.join(FORMATS)}, got {self.answer_format!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def train(config: TrainConfig, progress: bool = True, resume: bool = False) -> dict:
    """Fine-tune ``config.model`` on ``config.sources``; returns the stats written to ``training.json``.

    ``resume`` continues from the latest ``checkpoint-<step>`` in ``config.out`` (same remaining
    batches, same RNG); without a checkpoint it starts afresh. ``progress`` shows a tqdm bar with
    the loss. Raises ``ValueError`` for bad sources, no example that fits ``max_length``, a
    checkpoint of a different run, or a missing training dependency.
    """
    missing = [m for m in ("torch", "transformers", "peft")[: 3 if config.lora else 2] if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(f"{_INSTALL} (missing: {', '.join(missing)})")
    import torch
    from transformers import AutoTokenizer

    started = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = resolve_model(config.model)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    examples, report = build_examples(config.sources, tokenizer, config.max_length, config.types_file,
                                      config.dense_lexicon, config.dense_names, config.seed, config.answer_format)
    train_set, eval_set = split_eval(examples[: config.limit] if config.limit else examples, config.eval_fraction, config.seed)
    if not train_set:
        raise ValueError(f"no training example fits max_length={config.max_length}: {report}")
    report |= {"train_examples": len(train_set), "eval_examples": len(eval_set)}
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if config.device == "auto" else config.device)
    checkpoint = latest_checkpoint(out) if resume else None
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else report["end_token_id"]
    loop = Loop(config, load_model(config, model_dir, checkpoint).to(device), train_set, eval_set, pad_id, device)
    if checkpoint is not None:
        loop.restore(checkpoint)
    loop.run(out, progress)
    stats = {
        "config": asdict(config),
        "data": report,
        "steps": loop.step,
        "total_steps": loop.total_steps,
        "final_loss": loop.last_loss,
        "eval_loss": loop.evaluate() if eval_set else None,
        "seconds": round(time.perf_counter() - started, 2),
        "resumed_from": str(checkpoint) if checkpoint else None,
        "hardware": {"device": str(device), "torch": torch.__version__, "cpus": os.cpu_count(), "platform": platform.platform(),
                     "processor": cpu_model(), "bf16_autocast": loop.autocast,
                     "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
        "command": " ".join(sys.argv),
    } | training_curve(out / "train_log.jsonl")
    final = out / "final"
    loop.model.save_pretrained(final, safe_serialization=True)  # a peft model saves its adapter only
    if not config.lora:
        tokenizer.save_pretrained(final)
    (final / "training.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False), encoding="utf-8")
    logger.info("trained %d steps in %.0f s, final loss %s: %s", loop.step, stats["seconds"], loop.last_loss, final)
    return stats


def training_curve(log_path: Path, points: int = 50) -> dict:
    """From ``train_log.jsonl``: the loss curve (mean loss over about ``points`` equal spans of
    steps), the mean loss of each epoch, and the seconds spent in optimizer steps (resumed runs
    included)."""
    entries = [json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    steps = [e for e in entries if "loss" in e]
    if not steps:
        return {"loss_curve": [], "epoch_loss": [], "train_seconds": 0.0}
    span = max(1, -(-len(steps) // points))
    curve = [{"step": chunk[-1]["step"], "loss": round(sum(e["loss"] for e in chunk) / len(chunk), 4)}
             for chunk in (steps[i : i + span] for i in range(0, len(steps), span))]
    epochs: dict[int, list[float]] = {}
    for e in steps:
        epochs.setdefault(e["epoch"], []).append(e["loss"])
    return {"loss_curve": curve, "epoch_loss": [round(sum(v) / len(v), 4) for _, v in sorted(epochs.items())],
            "train_seconds": round(sum(e["seconds"] for e in steps), 1)}


def load_model(config: TrainConfig, model_dir: str, checkpoint: Path | None):
    """The fp32 model to train: the base (or a full-model checkpoint), with a LoRA adapter if asked."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(checkpoint if checkpoint and not config.lora else model_dir, dtype=torch.float32)
    if not config.lora:
        return model
    from peft import LoraConfig, PeftModel, get_peft_model

    start = checkpoint or config.init_adapter
    if start is not None:
        if not (Path(start) / "adapter_config.json").is_file():
            raise FileNotFoundError(f"no LoRA adapter (adapter_config.json) in {start}")
        model = PeftModel.from_pretrained(model, start, is_trainable=True)
        for p in model.parameters():  # a shipped fp16 adapter trains with fp32 master weights
            if p.requires_grad:
                p.data = p.data.float()
        return model
    targets = linear_projections(model) if config.lora_targets == "all-linear" else list(config.lora_targets)
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def linear_projections(model) -> list[str]:
    """Short names of the linear layers but the output head (``q_proj`` ... ``down_proj`` for Llama):
    the plain adapter config vLLM expects (peft saves ``all-linear`` as full module paths)."""
    import torch

    head = model.get_output_embeddings()
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m is not head})


def plan_batches(examples: list[Example], config: TrainConfig, epoch: int) -> list[list[int]]:
    """The epoch's batches of ``examples`` indices: one prompt prefix each, within ``batch_size``
    rows and ``max_batch_tokens`` padded suffix tokens (``train_data.batch_plan``)."""
    prefixes: dict[tuple[int, ...], int] = {}
    groups = [prefixes.setdefault(e.prefix, len(prefixes)) for e in examples]
    lengths = [e.suffix_length for e in examples]
    return batch_plan(lengths, config.batch_size, config.seed, epoch, groups, config.max_batch_tokens)


class Loop:
    """The optimizer loop over length-grouped batches, with checkpoints that resume exactly."""

    def __init__(self, config: TrainConfig, model, train_set: list[Example], eval_set: list[Example], pad_id: int, device) -> None:
        import torch
        from transformers import get_linear_schedule_with_warmup

        self.config, self.model, self.train_set, self.eval_set = config, model, train_set, eval_set
        self.pad_id, self.device = pad_id, device
        self.autocast = config.bf16 and (device.type == "cuda" or cpu_has_bf16())
        # batch counts differ between epochs (prefix groups and token budgets pack differently)
        self.epoch_starts = list(itertools.accumulate(
            (-(-len(plan_batches(train_set, config, e)) // config.grad_accum) for e in range(config.epochs)), initial=0))
        self.total_steps = min(self.epoch_starts[-1], config.max_steps or self.epoch_starts[-1])
        self.token_scale = sum(len(e.input_ids) - e.prompt_length for e in train_set) / max(1, self.epoch_starts[1])
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW([  # no weight decay on biases and norms
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}], lr=config.lr)
        warmup = round(config.warmup_ratio * self.total_steps)
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, warmup, self.total_steps)
        self.step, self.last_loss = 0, None
        self.plan = {"examples": len(train_set), "batch_size": config.batch_size, "max_batch_tokens": config.max_batch_tokens,
                     "grad_accum": config.grad_accum, "epochs": config.epochs, "seed": config.seed, "lora": config.lora,
                     "loss_scale": "epoch-mean-tokens"}

    def run(self, out: Path, progress: bool) -> None:
        """Train from ``self.step`` to the end, logging each step to ``out/train_log.jsonl``."""
        from tqdm.auto import tqdm

        log_path = out / "train_log.jsonl"
        _trim_log(log_path, self.step)
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not progress, desc="train", unit="step")
        self.model.train()
        with log_path.open("a", encoding="utf-8") as log:
            for epoch in range(bisect.bisect_right(self.epoch_starts, self.step) - 1, self.config.epochs):
                plan = plan_batches(self.train_set, self.config, epoch)
                groups = [plan[i : i + self.config.grad_accum] for i in range(0, len(plan), self.config.grad_accum)]
                for group in groups[self.step - self.epoch_starts[epoch] :]:
                    if self.step >= self.total_steps:
                        break
                    entry = self.optimizer_step([[self.train_set[i] for i in batch] for batch in group])
                    log.write(json.dumps(entry | {"epoch": epoch}) + "\n")
                    bar.update(1)
                    bar.set_postfix(loss=f"{self.last_loss:.4f}", epoch=epoch)
                    if self.config.save_every and self.step % self.config.save_every == 0:
                        log.flush()
                        self.save(out)
                if self.eval_set:
                    log.write(json.dumps({"step": self.step, "epoch": epoch, "eval_loss": self.evaluate()}) + "\n")
                if self.step >= self.total_steps and self.step < self.epoch_starts[epoch + 1]:
                    break  # max_steps ends the run inside this epoch
                if epoch + 1 < self.config.epochs:  # weights only, for a learning curve (final/ holds the last epoch)
                    self.model.save_pretrained(out / f"epoch-{epoch + 1}", safe_serialization=True)
        bar.close()

    def optimizer_step(self, batches: list[list[Example]]) -> dict:
        """One accumulated step, clipped; the log entry (``loss``: mean over its answer tokens).

        The gradient is the summed loss over ``token_scale`` (the mean answer tokens per step),
        not over this step's own tokens: every answer token weighs the same in every step.
        Batches are length-sorted, so some hold only short ``None`` answers; a per-step mean
        would weigh those tokens ~20x more and teach the model to answer ``None`` (measured:
        every sentence ``None`` after 50 steps).
        """
        import torch

        started = time.perf_counter()
        tokens = sum(len(e.input_ids) - e.prompt_length for batch in batches for e in batch)
        loss = 0.0
        for batch in batches:
            batch_sum, _ = self.loss_sum(batch)
            (batch_sum / self.token_scale).backward()
            loss += batch_sum.item() / tokens
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm or float("inf"))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step, self.last_loss = self.step + 1, loss
        return {"step": self.step, "loss": loss, "lr": self.scheduler.get_last_lr()[0], "grad_norm": float(norm),
                "tokens": tokens, "seconds": round(time.perf_counter() - started, 4)}

    def loss_sum(self, examples: list[Example]):
        """Summed cross-entropy over the answer tokens of one batch (one shared prefix), and their count."""
        step = prefix_loss_sum if examples[0].prefix_length else plain_loss_sum  # a template with no shared instruction
        return step(self.model, examples, self.pad_id, self.device, self.autocast)

    def evaluate(self) -> float:
        """Mean answer-token loss over the held-out examples (no gradients, dropout off)."""
        import torch

        self.model.eval()
        total, tokens = 0.0, 0
        with torch.no_grad():
            for batch in plan_batches(self.eval_set, self.config, epoch=0):
                loss, count = self.loss_sum([self.eval_set[i] for i in batch])
                total, tokens = total + loss.item(), tokens + count
        self.model.train()
        return total / max(tokens, 1)

    def save(self, out: Path) -> Path:
        """Write ``checkpoint-<step>`` atomically (temp dir, then rename); prune the oldest."""
        import torch

        target, tmp = out / f"checkpoint-{self.step}", out / f".checkpoint-{self.step}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        self.model.save_pretrained(tmp, safe_serialization=True)
        rng = {"python": random.getstate(), "torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
        state = {"step": self.step, "plan": self.plan, "last_loss": self.last_loss, "rng": rng,
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
        torch.save(state, tmp / "trainer_state.pt")
        shutil.rmtree(target, ignore_errors=True)
        os.rename(tmp, target)
        for old in sorted(out.glob("checkpoint-*"), key=_step_of)[: -self.config.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        return target

    def restore(self, checkpoint: Path) -> None:
        """Load step, optimizer, scheduler and RNG states from ``checkpoint`` (weights are loaded already)."""
        import torch

        state = torch.load(checkpoint / "trainer_state.pt", weights_only=False)
        if state["plan"] != self.plan:
            raise ValueError(f"{checkpoint} belongs to another run ({state['plan']}), not this one ({self.plan})")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        random.setstate(state["rng"]["python"])
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.step, self.last_loss = state["step"], state["last_loss"]
        logger.info("resuming from %s (step %d of %d)", checkpoint, self.step, self.total_steps)


def latest_checkpoint(out: Path) -> Path | None:
    """The complete ``checkpoint-<step>`` with the highest step, or None."""
    done = [p for p in out.glob("checkpoint-*") if _step_of(p) >= 0 and (p / "trainer_state.pt").is_file()]
    return max(done, key=_step_of, default=None)


def _step_of(path: Path) -> int:
    """The step of a ``checkpoint-<step>`` directory (-1 for other names)."""
    tail = path.name.rpartition("-")[2]
    return int(tail) if tail.isdigit() else -1


def _trim_log(path: Path, step: int) -> None:
    """Keep log lines up to ``step``: an interrupted run may have logged past its last checkpoint."""
    if path.exists():
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        path.write_text("".join(line + "\n" for line in lines if json.loads(line)["step"] <= step), encoding="utf-8")

