"""Ship a trained LoRA adapter as the package's default: fp16 weights, its training record.

    .venv/bin/python scripts/ship_adapter.py runs/default/final [--to DIR]

Copies ``adapter_config.json`` and the weights (cast to fp16: half the size, and the merged
model is the same to within fp16 rounding of the low-rank factors) into
``bulkner/data/default-adapter/``, with the run's ``training.json`` (which ``bulkner train``
writes with the loss curve, epoch losses and seconds) marked with the shipped dtype. Refuses an
adapter over 40 MB. ``--to`` writes elsewhere: a candidate kept in git between sessions
(``models/``) before it becomes the default.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

TARGET = Path(__file__).resolve().parents[1] / "bulkner" / "data" / "default-adapter"
LIMIT = 40 * 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("final", type=Path, help="the run's final/ directory (a peft LoRA adapter)")
    parser.add_argument("--to", type=Path, default=TARGET, help="where to write it (default: the package's default adapter)")
    args = parser.parse_args()
    target = args.to.resolve()

    import torch
    from safetensors.torch import load_file, save_file

    weights = load_file(args.final / "adapter_model.safetensors")
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.to(torch.float16).contiguous() for k, v in weights.items()}, tmp / "adapter_model.safetensors", metadata={"format": "pt"})
    shutil.copy(args.final / "adapter_config.json", tmp / "adapter_config.json")
    record = json.loads((args.final / "training.json").read_text(encoding="utf-8"))
    record["shipped_dtype"] = "float16"
    (tmp / "training.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    for path in tmp.iterdir():
        path.chmod(0o644)  # package data is readable by all
    size = sum(p.stat().st_size for p in tmp.iterdir())
    if size > LIMIT:
        shutil.rmtree(tmp)
        raise SystemExit(f"ship_adapter: {size / 2**20:.1f} MB is over the 40 MB limit")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    print(json.dumps({"shipped": str(target), "mb": round(size / 2**20, 2), "tensors": len(weights)}))


if __name__ == "__main__":
    main()
