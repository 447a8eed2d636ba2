"""Write docs/configuration.md from the configuration dataclasses' own field docstrings.

    python scripts/config_reference.py            # rewrite docs/configuration.md
    python scripts/config_reference.py --check    # exit 1 when the file is out of date (a test runs this)

One place per concern: the defaults and meanings live in the code; this page is generated from it.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "configuration.md"
CLASSES = [
    ("bulkner/config.py", "RunConfig", "`bulkner run` / `split`: one run over a set of shards"),
    ("bulkner/config.py", "InputConfig", "`--input-format`, `--id-field`, `--text-field`: how inputs are read"),
    ("bulkner/config.py", "EngineConfig", "`--engine`, `--model`, `--adapter`, `--dtype` ...: the generator"),
    ("bulkner/config.py", "RayConfig", "`--runner ray`, `--replicas`, `--max-attempts` ...: replicas on a Ray cluster"),
    ("bulkner/training/train.py", "TrainConfig", "`bulkner train`: fine-tuning the generator"),
    ("bulkner/selectors/train.py", "SelectorTrainConfig", "`bulkner train-selector`: the span selector"),
    ("bulkner/evaluation/evaluate.py", "EvalConfig", "`bulkner eval`: scoring the pipeline on a gold corpus"),
]


def fields(path: Path, name: str) -> list[tuple[str, str, str, str]]:
    """``(field, type, default, docstring)`` of a dataclass, in order."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == name)
    found, body = [], cls.body
    for i, node in enumerate(body):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            doc = ""
            nxt = body[i + 1] if i + 1 < len(body) else None
            if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
                doc = " ".join(nxt.value.value.split()).replace("``", "`")
            default = ast.unparse(node.value) if node.value is not None else "(required)"
            found.append((node.target.id, ast.unparse(node.annotation), default, doc))
    return found


def render() -> str:
    lines = ["# Configuration reference", "",
             "Generated from the code by `python scripts/config_reference.py`; do not edit by hand. The CLI",
             "options of each command map onto these fields (`bulkner COMMAND --help` lists them).", ""]
    for file, name, title in CLASSES:
        lines += [f"## {name}", "", f"{title} (`{file}`).", "", "| field | type | default | meaning |", "|---|---|---|---|"]
        for field, kind, default, doc in fields(ROOT / file, name):
            cell = lambda text: text.replace("|", "\\|")  # noqa: E731
            lines.append(f"| `{field}` | `{cell(kind)}` | `{cell(default)}` | {cell(doc)} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        sys.exit(0 if OUTPUT.exists() and OUTPUT.read_text(encoding="utf-8") == text else 1)
    OUTPUT.parent.mkdir(exist_ok=True)
    OUTPUT.write_text(text, encoding="utf-8")
