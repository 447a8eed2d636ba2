"""The run fingerprint covers what changes the output, by content, not by location."""

from __future__ import annotations

from bulkner.config import EngineConfig, RunConfig
from bulkner.fingerprint import fingerprint
from bulkner.types import resolve_types


def fp(types=("Chemical", "Disease"), **engine):
    return fingerprint(RunConfig(out="x", types=types, engine=EngineConfig(**engine)), resolve_types(types))["hash"]


def test_type_order_engine_and_dtype_change_the_hash():
    assert fp() == fp()
    assert fp(types=("Disease", "Chemical")) != fp()
    assert fp(name="transformers") != fp(name="vllm")
    assert fp(dtype="bfloat16") != fp(dtype="float32")


def test_models_are_identified_by_content_not_place(tmp_path):
    a, b, c = (tmp_path / n / "final" for n in ("runA", "runB", "runC"))
    for d, weights in ((a, b"\x01" * 4096), (b, b"\x02" * 4096), (c, b"\x01" * 4096)):
        d.mkdir(parents=True)
        (d / "config.json").write_text('{"hidden_size": 64}')
        (d / "model.safetensors").write_bytes(weights)
    assert fp(model=str(a)) != fp(model=str(b))  # same names and sizes, other weights
    assert fp(model=str(a)) == fp(model=str(c))  # same content elsewhere


def test_the_reader_version_is_part_of_the_fingerprint(monkeypatch):
    from bulkner.connectors import discover as reader

    before = fp()
    monkeypatch.setattr(reader, "READER_VERSION", reader.READER_VERSION + 1)
    assert fp() != before


def test_the_answer_format_is_part_of_the_fingerprint_and_comes_from_the_adapter(tmp_path):
    import json

    adapter = tmp_path / "final"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    assert fp(answer_format="brackets") != fp(answer_format="blocks") == fp()  # no adapter records one: blocks
    (adapter / "training.json").write_text(json.dumps({"config": {"answer_format": "spans"}}))
    parts = fingerprint(RunConfig(out="x", engine=EngineConfig(adapter=str(adapter))), resolve_types(("Chemical", "Disease")))
    assert parts["answer_format"] == "spans-1"


def test_the_cascade_band_and_the_knowledge_base_are_part_of_the_fingerprint(tmp_path):
    """``--generate auto`` means window with a selector that has a calibrated band and a model
    that answers in brackets, uncertain with a band only (its band enters the fingerprint), all
    without one; linking adds the KB's identity."""
    import json
    import shutil

    from bulkner.checkpoints import default_selector
    from bulkner.config import generation_mode

    banded, plain = tmp_path / "banded", tmp_path / "plain"
    for path, band in ((banded, {"low": 0.2, "high": 0.7}), (plain, None)):
        shutil.copytree(default_selector(), path)
        meta = json.loads((path / "selector.json").read_text())
        meta.pop("cascade", None)
        (path / "selector.json").write_text(json.dumps(meta | ({"cascade": band} if band else {})))
    assert generation_mode("auto", str(banded)) == "uncertain" and generation_mode("auto", str(plain)) == "all"
    assert generation_mode("auto", str(banded), "brackets") == "window" and generation_mode("auto", str(banded), "blocks") == "uncertain"
    assert generation_mode("auto", None) == "all" and generation_mode("all", str(banded)) == "all"
    types = resolve_types(["Chemical", "Disease"])
    parts = {name: fingerprint(RunConfig(out="x", selector=str(path), link=False), types) for name, path in (("banded", banded), ("plain", plain))}
    assert parts["banded"]["generate"] == {"mode": "uncertain", "band": (0.2, 0.7)} and "generate" not in parts["plain"]  # the base model: blocks
    from bulkner.checkpoints import default_adapter
    from bulkner.config import EngineConfig

    shipped = fingerprint(RunConfig(out="x", selector=str(banded), link=False, engine=EngineConfig(adapter=default_adapter())), types)
    assert shipped["generate"] == {"mode": "window", "band": (0.2, 0.7)}  # the shipped tagger answers in brackets
    linked = fingerprint(RunConfig(out="x", selector=str(plain)), types)
    assert linked["linking"]["kb"]["name"] == "bulkner-kb" and "linking" not in parts["plain"]
