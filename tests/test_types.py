"""Entity type registry: presets and user-defined types."""

from __future__ import annotations

import json

import pytest

from bulkner.types import PRESETS, resolve_types


def test_presets_cover_the_issue_list():
    assert {"Chemical", "Disease", "Gene", "Species", "CellLine", "CellType", "DNA", "RNA", "Variant"} <= set(PRESETS)


def test_user_types_override_and_extend(tmp_path):
    path = tmp_path / "types.json"
    path.write_text(json.dumps({"Chemical": "only drugs", "Symptom": "what the patient reports"}))
    types = resolve_types(["Chemical", "Symptom", "Disease"], path)
    assert [(t.name, t.definition) for t in types][:2] == [("Chemical", "only drugs"), ("Symptom", "what the patient reports")]
    assert types[2].definition == PRESETS["Disease"]
    assert [t.name for t in resolve_types([], path)] == ["Chemical", "Symptom"]


@pytest.mark.parametrize("content, message", [("[1, 2]", "one JSON object"), ("{bad", "cannot read"), ('{"A:B": "x"}', "without")])
def test_bad_types_files_are_clear(tmp_path, content, message):
    path = tmp_path / "t.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        resolve_types([], path)


def test_unknown_preset_lists_presets():
    with pytest.raises(ValueError, match="presets are Chemical"):
        resolve_types(["Planet"])
