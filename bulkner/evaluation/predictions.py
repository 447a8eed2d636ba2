"""The predictions file of ``bulkner eval --predictions``: every span the generator predicted, per
sentence, so that the generator runs once and selectors are trained, calibrated and benchmarked
on its very answers (``bulkner train-selector --predictions``, ``bench/selector.py``).

One JSON object per line: ``{"key": sentence key, "spans": [[start, end, type], ...]}`` with
offsets into the sentence; when a selector ran, each span also carries its score and whether it
was kept: ``[start, end, type, score, kept]``. Spans a selector added are not in the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

from bulkner.schema import Entity, Span


def sentence_predictions(entities: Sequence[Entity], dropped: Sequence[Entity] | None = None) -> dict[str, list[list]]:
    """The rows of the file by sentence key: ``entities`` the generator predicted (kept) and, when a
    selector ran, the ones it ``dropped`` with their scores."""
    rows: dict[str, list[list]] = {}
    for kept, group in ((True, entities), (False, dropped or ())):
        for e in group:
            row = [e.start - e.sentence.start, e.end - e.sentence.start, e.type]
            rows.setdefault(e.sentence.key, []).append(row if dropped is None else row + [round(e.score, 6), kept])
    return rows


def write_predictions(path: str | Path, rows: dict[str, list[list]]) -> None:
    """Write :func:`sentence_predictions` rows; OSError when the file cannot be written."""
    with open(path, "w", encoding="utf-8") as f:
        for key, found in rows.items():
            f.write(json.dumps({"key": key, "spans": found}, ensure_ascii=False) + "\n")


def read_predictions(paths: Iterable[str | Path]) -> dict[str, list[Span]]:
    """Predicted spans by sentence key from prediction files (every span, kept or not); ValueError
    naming the file and line when one is not a predictions file."""
    spans: dict[str, list[Span]] = {}
    for path in paths:
        number = 0
        try:
            with open(path, encoding="utf-8") as f:
                for number, line in enumerate(f, 1):
                    if line.strip():
                        row = json.loads(line)
                        spans.setdefault(row["key"], []).extend(Span(int(s), int(e), str(t)) for s, e, t, *_ in row["spans"])
        except OSError as err:
            raise ValueError(f"predictions {path}: {err.strerror or err}") from err
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"predictions {path} line {number}: not a bulkner eval prediction ({err})") from err
    return spans
