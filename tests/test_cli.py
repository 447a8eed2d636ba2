"""The CLI end to end on real NLM sample XML."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import bulkner
import bulkner.outputs.tables
from bulkner.cli import app, sample_input
from bulkner.schema import TABLES

from tests.conftest import requires_vllm

PUBMED = Path(__file__).resolve().parents[2] / "shared" / "data" / "pubmed"
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def read(out: Path, table: str, shard: str):
    return pq.read_table(out / table / f"{shard}.parquet")


def test_split_on_update_file_with_deletions(tmp_path):
    src = PUBMED / "pmparser" / "updatefiles" / "pubmed20n1016.xml.gz"
    if not src.exists():
        pytest.skip("shared data missing")
    result = invoke("split", src, "--out", tmp_path, "--summary-json", tmp_path / "s.json")
    assert result.exit_code == 0, result.output
    docs = read(tmp_path, "documents", "pubmed20n1016")
    sents = read(tmp_path, "sentences", "pubmed20n1016")
    assert len(set(docs.column("doc_id").to_pylist())) == 28
    assert read(tmp_path, "tombstones", "pubmed20n1016").num_rows == 262
    assert not (tmp_path / "entities").exists()
    texts = {(r["doc_id"], r["passage_index"]): r["text"] for r in docs.to_pylist()}
    for row in sents.to_pylist():
        assert texts[(row["doc_id"], row["passage_index"])][row["start"] : row["end"]] == row["text"]
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["tombstones"] == 262 and summary["sentences"] == sents.num_rows
    again = invoke("split", src, "--out", tmp_path)
    assert again.exit_code == 0 and "1 skipped" in again.output


def test_bad_inputs_are_clear_errors(tmp_path):
    missing = invoke("split", tmp_path / "nope.xml.gz", "--out", tmp_path / "o")
    assert missing.exit_code == 2 and "nope.xml.gz" in missing.output and "Traceback" not in missing.output
    unknown = invoke("run", sample_input(), "--out", tmp_path / "o2", "--types", "Chemical,Planet", "--engine", "transformers")
    assert unknown.exit_code == 2 and "Planet" in unknown.output
    for args, message in [(["--generate", "sometimes"], "generate must be one of auto, all, uncertain"),
                          (["--generate", "uncertain", "--no-selector"], "needs the span selector")]:
        refused = invoke("run", sample_input(), "--out", tmp_path / "o3", "--engine", "transformers", *args)
        assert refused.exit_code == 2 and message in refused.output and "Traceback" not in refused.output, refused.output


def test_bad_output_paths_are_one_clear_line_before_any_work(tmp_path):
    (tmp_path / "file").write_text("x")
    for args, message in [
        (["--out", tmp_path / "file"], "is a file; give a directory"),
        (["--out", tmp_path / "file" / "o"], "cannot be created"),  # issue 26, case 7: was a traceback
        (["--out", tmp_path / "o", "--summary-json", tmp_path], "is a directory; give a file name"),
        (["--out", tmp_path / "o", "--summary-json", tmp_path / "file" / "s.json"], "cannot create its folder"),
    ]:
        result = invoke("split", sample_input(), *args)
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()  # refused before any work
    deep = tmp_path / "new" / "folder" / "s.json"
    assert invoke("split", sample_input(), "--out", tmp_path / "o", "--summary-json", deep).exit_code == 0
    assert json.loads(deep.read_text())["documents"] == 4


@pytest.mark.parametrize("named", [False, True])
def test_an_empty_input_is_a_failed_shard_and_the_good_ones_are_done(tmp_path, named):
    """Issue 26, case 3: a 0-byte input found in a folder was skipped silently; named on the
    command line it refused the whole run. Both are now a failed shard (exit 1) beside a done one."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    shutil.copy(sample_input(), folder / "pubmed26n0001.xml.gz")
    (folder / "pubmed26n0002.xml").write_bytes(b"")
    inputs = [folder / "pubmed26n0001.xml.gz", folder / "pubmed26n0002.xml"] if named else [folder]
    result = invoke("split", *inputs, "--out", tmp_path / "o", "--summary-json", tmp_path / "s.json")
    assert result.exit_code == 1, result.output
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["documents"] == 4
    assert summary["shards"]["done"] == summary["shards"]["failed"] == 1, summary
    assert list(summary["failed"]) == ["pubmed26n0002"] and "is empty" in summary["failed"]["pubmed26n0002"]


def test_damaged_metadata_is_one_line_naming_the_file(tmp_path):
    assert invoke("split", sample_input(), "--out", tmp_path / "o").exit_code == 0
    fingerprint = tmp_path / "o" / "_fingerprint.json"
    fingerprint.write_text(fingerprint.read_text()[:20])
    result = invoke("split", sample_input(), "--out", tmp_path / "o")
    assert result.exit_code == 2 and "_fingerprint.json is damaged" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_truncated_shard_keeps_records_and_exits_3(tmp_path):
    data = gzip.decompress(Path(sample_input()).read_bytes())
    cut = data[: data.rindex(b"<PubmedArticle>") + 200]
    (tmp_path / "cut.xml").write_bytes(cut)
    result = invoke("split", tmp_path / "cut.xml", "--out", tmp_path / "o")
    assert result.exit_code == 3, result.output
    assert "malformed_xml" in result.output
    assert read(tmp_path / "o", "documents", "cut").num_rows > 0
    assert read(tmp_path / "o", "rejects", "cut").column("reason").to_pylist() == ["malformed_xml"]


def check_run_outputs(out: Path, shard: str) -> None:
    for table, schema in TABLES.items():
        assert read(out, table, shard).schema.equals(schema), table
    done = json.loads((out / "_done" / f"{shard}.json").read_text())
    assert done["documents"] == 4 and done["prompts"] == done["sentences"] > 0
    assert done["prompt_tokens"] > 0 and done["output_tokens"] > 0
    passages = {(r["doc_id"], r["passage_index"]): r["text"] for r in read(out, "documents", shard).to_pylist()}
    for e in read(out, "entities", shard).to_pylist():
        assert passages[(e["doc_id"], e["passage_index"])][e["start"] : e["end"]] == e["text"]


@pytest.mark.parametrize("engine", [pytest.param("vllm", marks=[requires_vllm, pytest.mark.vllm]), "transformers"])
def test_run_end_to_end_with_tiny_model(tmp_path, tiny_model_dir, engine):
    out = tmp_path / "out"
    args = ["run", sample_input(), "--out", out, "--model", tiny_model_dir, "--types", "Chemical,Disease", "--engine", engine, "--max-model-len", "1024"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "sentences/s" in result.output and "entities:" in result.output
    check_run_outputs(out, "sample-pubmed")
    rerun = invoke(*args)
    assert rerun.exit_code == 0 and "1 skipped" in rerun.output
    other = invoke(*args[:-6], "--types", "Disease", *args[-4:])
    assert other.exit_code == 2 and "another configuration" in other.output


def test_inputs_with_one_shard_name_are_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in ("a", "b"):
        (tmp_path / d / "x.xml.gz").write_bytes(Path(sample_input()).read_bytes())
    result = invoke("split", tmp_path / "a", tmp_path / "b", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "same shard name 'x'" in result.output


NER = PUBMED.parent / "ner"


def test_eval_oracle_json_shape(tmp_path):
    gold = NER / "ncbi_disease" / "NCBIdevelopset_corpus.txt"
    if not gold.exists():
        pytest.skip("shared data missing")
    result = invoke("eval", "--gold", gold, "--format", "pubtator", "--oracle", "--json", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["documents"] == 100 and report["oracle"] is True and report["types"] == ["Disease"]
    assert set(report["strict"]) == {"micro", "macro", "per_type"} and set(report["relaxed"]) == set(report["strict"])
    assert report["strict"]["micro"]["recall"] >= 0.995
    assert "Disease" in result.output and "micro" in result.output


def test_train_then_eval_and_run_with_the_adapter(tmp_path, tiny_model_dir):
    gold = NER / "bc5cdr" / "CDR_DevelopmentSet.PubTator.txt"
    if not gold.exists():
        pytest.skip("shared data missing")
    trained = invoke(
        "train", "--source", f"pubtator:{gold}", "--out", tmp_path / "t", "--model", tiny_model_dir,
        "--limit", "8", "--epochs", "1", "--batch-size", "4", "--save-every", "1",
    )
    assert trained.exit_code == 0, trained.output
    adapter = tmp_path / "t" / "final"
    assert (adapter / "adapter_config.json").exists() and (tmp_path / "t" / "checkpoint-2").exists()
    evaluated = invoke(
        "eval", "--gold", gold, "--format", "pubtator", "--limit", "2", "--model", tiny_model_dir,
        "--adapter", adapter, "--engine", "transformers", "--max-model-len", "1024", "--json", tmp_path / "e.json",
    )
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["documents"] == 2 and report["oracle"] is False
    assert report["pipeline"]["prompts"] == report["pipeline"]["sentences"] > 0
    if requires_vllm.args[0]:  # the vLLM tier: the adapter through vLLM's LoRA path
        return
    ran = invoke("run", sample_input(), "--out", tmp_path / "o", "--model", tiny_model_dir, "--adapter", adapter,
                 "--types", "Chemical,Disease", "--engine", "vllm", "--max-model-len", "1024")
    assert ran.exit_code == 0, ran.output


def first_blocks(path: Path, n: int) -> str:
    """The first ``n`` blank-line separated blocks of a corpus file (documents, CoNLL sentences)."""
    return "\n\n".join(path.read_text(encoding="utf-8").split("\n\n")[:n]) + "\n\n"


def test_gerbera_recipe_mixed_stage_then_target_only_stage(tmp_path, tiny_model_dir):
    """GERBERA's recipe as two `bulkner train` commands (README, "Relation to the seed systems"):
    the target (NCBI-disease, Disease) with an auxiliary corpus (BC2GM, Gene) in a first
    stage, each with its own type list; then the target alone from the first stage's adapter."""
    ncbi, bc2gm = NER / "ncbi_disease" / "NCBItrainset_corpus.txt", NER / "bc2gm" / "conll" / "train.tsv"
    if not (ncbi.exists() and bc2gm.exists()):
        pytest.skip("shared data missing")
    (tmp_path / "ncbi.txt").write_text(first_blocks(ncbi, 2), encoding="utf-8")
    (tmp_path / "bc2gm.tsv").write_text(first_blocks(bc2gm, 6), encoding="utf-8")
    target = ("--source", f"pubtator:{tmp_path / 'ncbi.txt'}")
    common = ("--model", tiny_model_dir, "--epochs", "1", "--batch-size", "4", "--lora-r", "4")
    mixed = invoke("train", *target, "--source", f"conll:{tmp_path / 'bc2gm.tsv'}:Gene",
                   "--out", tmp_path / "mixed", *common)
    assert mixed.exit_code == 0, mixed.output
    first = json.loads((tmp_path / "mixed" / "final" / "training.json").read_text())
    assert [s["types"] for s in first["data"]["sources"]] == [["Disease"], ["Gene"]]
    assert all(s["examples"] > 0 for s in first["data"]["sources"])
    second = invoke("train", *target, "--init-adapter", tmp_path / "mixed" / "final", "--out", tmp_path / "target", *common)
    assert second.exit_code == 0, second.output
    record = json.loads((tmp_path / "target" / "final" / "training.json").read_text())
    assert record["config"]["init_adapter"] == str(tmp_path / "mixed" / "final")
    assert [s["types"] for s in record["data"]["sources"]] == [["Disease"]] and record["steps"] > 0


def test_vaner_dense_samples_double_the_examples_of_a_training_run(tmp_path, tiny_model_dir):
    """`bulkner lexicon` builds the lexicon from a corpus slice's concept ids; `bulkner train
    --dense-lexicon` adds one dense sample per training sentence, counted in training.json."""
    ncbi = NER / "ncbi_disease" / "NCBItrainset_corpus.txt"
    if not ncbi.exists():
        pytest.skip("shared data missing")
    (tmp_path / "ncbi.txt").write_text(first_blocks(ncbi, 2), encoding="utf-8")
    built = invoke("lexicon", tmp_path / "ncbi.txt", "--output", tmp_path / "lexicon.json")
    assert built.exit_code == 0, built.output
    assert "Disease" in built.output and json.loads((tmp_path / "lexicon.json").read_text())["types"]["Disease"]
    trained = invoke("train", "--source", f"pubtator:{tmp_path / 'ncbi.txt'}", "--dense-lexicon", tmp_path / "lexicon.json",
                     "--out", tmp_path / "t", "--model", tiny_model_dir, "--epochs", "1", "--batch-size", "8", "--lora-r", "4")
    assert trained.exit_code == 0, trained.output
    source = json.loads((tmp_path / "t" / "final" / "training.json").read_text())["data"]["sources"][0]
    assert source["dense_examples"] == source["sentences"] > 0
    assert source["examples"] == source["sentences"] + source["dense_examples"] - source["skipped_too_long"]
    refused = invoke("lexicon", tmp_path / "t" / "final" / "training.json", "--output", tmp_path / "x.json")
    assert refused.exit_code == 2 and "concept id" in refused.output


@requires_vllm
@pytest.mark.vllm
def test_zero_shot_types_by_definition_are_scored_strict_and_relaxed(tmp_path):
    """GLiNER-biomed's setting (README, "Relation to the seed systems"): the default tagger asked
    for JNLPBA's five types, never trained on, by name and definition from the versioned types
    file, on a slice of the development set; every sentence is prompted and both matchings are
    reported per type (`bench/zero_shot.py` runs the full comparison)."""
    gold = NER / "jnlpba" / "conll" / "devel.tsv"
    types_file = Path(bulkner.__file__).parent / "data" / "types" / "zero-shot-v1.json"
    if not gold.exists():
        pytest.skip("shared data missing")
    five = ["Gene", "DNA", "RNA", "CellLine", "CellType"]
    assert set(five) <= set(json.loads(types_file.read_text()))
    result = invoke("eval", "--gold", gold, "--format", "conll", "--types", ",".join(five), "--types-file", types_file,
                    "--limit", "20", "--json", tmp_path / "zero.json")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "zero.json").read_text())
    assert report["documents"] == 20 and report["types"] == five
    assert report["pipeline"]["prompts"] == report["pipeline"]["sentences"] == 20
    for matching in ("strict", "relaxed"):
        assert set(report[matching]["per_type"]) == set(five)
    assert report["strict"]["micro"]["f1"] <= report["relaxed"]["micro"]["f1"]
    assert sum(v["support"] for v in report["strict"]["per_type"].values()) > 0


def test_unreadable_shard_is_reported_and_the_others_still_run(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.parquet").write_bytes(b"not parquet at all")
    (tmp_path / "in" / "b.xml.gz").write_bytes(Path(sample_input()).read_bytes())
    (tmp_path / "in" / "c.xml").write_text("<Unknown/>")  # not an input: skipped, not a failed shard
    result = invoke("split", tmp_path / "in", "--out", tmp_path / "o")
    assert result.exit_code == 1 and "failed a:" in result.output and "Traceback" not in result.output
    assert (tmp_path / "o" / "_done" / "b.json").exists() and not (tmp_path / "o" / "_done" / "a.json").exists()
    assert not list((tmp_path / "o").glob("*/c.*"))
    named = invoke("split", tmp_path / "in" / "c.xml", "--out", tmp_path / "o2")
    assert named.exit_code == 2 and "c.xml: cannot tell its format" in named.output


def test_run_with_a_selector_scores_entities(tmp_path, tiny_model_dir, tiny_span_selector):
    gold = NER / "bc5cdr" / "CDR_DevelopmentSet.PubTator.txt"
    if not gold.exists():
        pytest.skip("shared data missing")
    args = ["eval", "--gold", gold, "--format", "pubtator", "--limit", "2", "--model", tiny_model_dir,
            "--engine", "transformers", "--max-model-len", "1024", "--json", tmp_path / "e.json"]
    plain = invoke(*args)
    assert plain.exit_code == 0, plain.output
    everything = invoke(*args, "--selector", tiny_span_selector, "--selector-threshold", "0")
    nothing = invoke(*args, "--selector", tiny_span_selector, "--selector-threshold", "1")
    assert everything.exit_code == nothing.exit_code == 0, nothing.output
    out = tmp_path / "out"
    run_args = ["run", sample_input(), "--out", out, "--model", tiny_model_dir, "--types", "Chemical,Disease", "--engine", "transformers",
                "--max-model-len", "1024", "--selector", tiny_span_selector, "--selector-threshold", "0"]
    assert invoke(*run_args).exit_code == 0
    scores = read(out, "entities", "sample-pubmed").column("score").to_pylist()
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert json.loads((out / "_fingerprint.json").read_text())["selector"].startswith("selector-span-v1-e2-")
    other = invoke(*run_args[:-1], "0.5")
    assert other.exit_code == 2 and "selector" in other.output


@requires_vllm
@pytest.mark.vllm
@pytest.mark.slow
def test_selector_thresholds_0_and_1_give_different_entity_tables(tmp_path, tiny_span_selector):
    """With the default generator (it finds entities in the sample), keep threshold 0 keeps every
    parsed span and 1 drops every span it scores (the fixture selector adds none); the summary
    counts the drops (the abbreviation pass, which also adds and drops, is off here)."""
    rows = {}
    for threshold in ("0", "1"):
        result = invoke("run", sample_input(), "--out", tmp_path / threshold, "--selector", tiny_span_selector,
                        "--selector-threshold", threshold, "--no-abbreviations", "--summary-json", tmp_path / f"{threshold}.json")
        assert result.exit_code == 0, result.output
        rows[threshold] = read(tmp_path / threshold, "entities", "sample-pubmed").to_pylist()
    assert len(rows["0"]) > len(rows["1"])
    summary = json.loads((tmp_path / "1.json").read_text())
    assert summary["selector_dropped"] == len(rows["0"]) - len(rows["1"]) and "the selector dropped" in result.output


def test_train_selector_writes_a_loadable_selector(tmp_path, tiny_encoder):
    gold = NER / "bc5cdr" / "CDR_DevelopmentSet.PubTator.txt"
    if not gold.exists():
        pytest.skip("shared data missing")
    from bulkner.selectors import open_selector
    from bulkner.selectors.span import SpanSelector

    result = invoke("train-selector", "--source", f"pubtator:{gold}", "--out", tmp_path / "sel",
                    "--encoder", tiny_encoder, "--limit", "10", "--epochs", "1")
    assert result.exit_code == 0 and "add threshold" in result.output, result.output
    selector = open_selector(tmp_path / "sel")
    assert isinstance(selector, SpanSelector) and 0.0 <= selector.threshold <= 1.0
    bad = invoke("train-selector", "--source", "nosuchformat:x", "--out", tmp_path / "s2")
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    again = invoke("train-selector", "--calibrate-only", "--source", f"pubtator:{gold}", "--out", tmp_path / "sel", "--limit", "10")
    assert again.exit_code == 0 and "0 steps" in again.output, again.output
    gone = invoke("train-selector", "--kind", "pair", "--source", f"pubtator:{gold}", "--out", tmp_path / "s3")
    assert gone.exit_code == 2 and "--kind" in gone.output


def test_eval_predictions_calibrate_train_selector(tmp_path, tiny_encoder):
    gold = NER / "bc5cdr" / "CDR_DevelopmentSet.PubTator.txt"
    if not gold.exists():
        pytest.skip("shared data missing")
    small = tmp_path / "three.PubTator.txt"  # the first three documents, for eval and selector alike
    small.write_text("\n\n".join(gold.read_text(encoding="utf-8").split("\n\n")[:3]) + "\n", encoding="utf-8")
    gold = small
    result = invoke("eval", "--gold", gold, "--format", "pubtator", "--oracle",
                    "--predictions", tmp_path / "p.jsonl", "--json", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    micro = json.loads((tmp_path / "r.json").read_text())["strict"]["micro"]
    assert sum(len(r["spans"]) for r in rows) == micro["tp"] + micro["fp"] > 0
    # near misses (one character trimmed on the left) stand in for a generator's boundary errors
    near = [{"key": r["key"], "spans": [[s + 1, e, t] for s, e, t in r["spans"] if e - s > 1]} for r in rows]
    (tmp_path / "near.jsonl").write_text("".join(json.dumps(r) + "\n" for r in near))
    calibrations = []
    for extra in ([], ["--predictions", tmp_path / "near.jsonl"]):
        out = tmp_path / f"sel{len(extra)}"
        trained = invoke("train-selector", "--source", f"pubtator:{gold}", "--out", out, "--encoder", tiny_encoder,
                         "--epochs", "1", *extra)
        assert trained.exit_code == 0, trained.output
        calibrations.append(json.loads((out / "selector.json").read_text())["calibration"])
    plain, hard = calibrations
    assert plain["on"] == "selector alone" and plain["threshold"] == 0.0 and hard["on"] == "generator"
    # calibrated on the predicted spans of the held-out sentences only (all near misses: none is right)
    assert hard["f1_without_selector"] == 0.0
    bad = invoke("train-selector", "--source", f"pubtator:{gold}", "--out", tmp_path / "s3", "--predictions", tmp_path / "r.json")
    assert bad.exit_code == 2 and "not a bulkner eval prediction" in bad.output


def test_eval_oracle_on_a_type_subset(tmp_path):
    gold = NER / "bc5cdr" / "CDR_DevelopmentSet.PubTator.txt"
    if not gold.exists():
        pytest.skip("shared data missing")
    result = invoke("eval", "--gold", gold, "--format", "pubtator", "--oracle", "--types", "Chemical", "--limit", "50",
                    "--json", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["types"] == ["Chemical"] and report["strict"]["micro"]["recall"] == 1.0
    assert report["pipeline"]["crossing"] == 0


@requires_vllm
@pytest.mark.vllm
@pytest.mark.slow
def test_readme_first_command_tags_the_sample_quietly(tmp_path, bulkner_cache):
    """The README's first command: the shipped default tagger (merged into a cached copy, vLLM on
    CPU) finds Disease mentions, every "LTBI" (defined as "latent TB infection (LTBI)") as a
    Disease with one concept id, most entities with a MeSH id, none of the abbreviations of
    non-entities, under 5% of sentences give unparsable answers, and
    the console shows no warning or library log line."""
    import os
    import re
    import subprocess
    import sys

    bulkner = Path(sys.executable).with_name("bulkner")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "VLLM_LOGGING_LEVEL")}
    done = subprocess.run([str(bulkner), "run", "--out", str(tmp_path / "out"), "--summary-json", str(tmp_path / "s.json")],
                          capture_output=True, text=True, timeout=1200, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["entities_by_type"].get("Disease", 0) > 0
    assert "entities:" in done.stdout and "Disease" in done.stdout
    entities = read(tmp_path / "out", "entities", "sample-pubmed").to_pylist()
    ltbi = {(e["type"], e["concept_id"]) for e in entities if e["text"] == "LTBI"}  # "latent TB infection (LTBI)" (issue 24)
    assert len(ltbi) == 1 and next(iter(ltbi))[0] == "Disease" and not {"TTT", "FBP"} & {e["text"] for e in entities}
    ids = [e["concept_id"] for e in entities if e["concept_id"]]  # the six types' namespaces
    curie = r"MESH:[CD]\d+|OMIM:\d+|NCBIGene:\d+|NCBITaxon:\d+|CVCL_\w{4}|dbSNP:rs\d+|tmVar:.+"
    assert next(iter(ltbi))[1] and len(ids) > len(entities) / 2 and all(re.fullmatch(curie, i) for i in ids), entities
    rejects = read(tmp_path / "out", "rejects", "sample-pubmed").to_pylist()
    unparsed = {r["record"].split(": ")[0] for r in rejects if r["stage"] == "parse"}  # "<sentence key>: <span>"
    assert len(unparsed) < 0.05 * summary["sentences"], rejects
    noise = re.compile(r"warn|traceback|\bINFO\b|\bDEBUG\b|deprecat|Loading|\[W\d{4}", re.IGNORECASE)
    assert not [line for line in done.stderr.replace("\r", "\n").splitlines() if noise.search(line)], done.stderr[-3000:]


@requires_vllm
@pytest.mark.vllm
@pytest.mark.slow
def test_the_default_tags_genes_species_and_variants_in_a_gene_centred_file(tmp_path, bulkner_cache):
    """Three real gene-centred citations (BRCA1/BRCA2 in cancer cell lines, FBN1 and MLH1/MSH2
    mutations, from pubmedsample18n0001): the default (six types; issue 23) finds Gene, Species
    and Variant mentions besides Disease."""
    import subprocess
    import sys

    data = Path(__file__).resolve().parent / "data" / "pubmed" / "gene-centred.xml"
    bulkner = Path(sys.executable).with_name("bulkner")
    done = subprocess.run([str(bulkner), "run", str(data), "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    entities = read(tmp_path / "out", "entities", "gene-centred").to_pylist()
    found = {e["type"] for e in entities}
    assert {"Gene", "Species", "Variant", "Disease"} <= found, sorted(found)
    genes = {e["text"] for e in entities if e["type"] == "Gene"}
    assert {"BRCA1", "FBN1", "MLH1"} <= genes, sorted(genes)
    assert {"K329X", "C1402Y"} & {e["text"] for e in entities if e["type"] == "Variant"}, entities


def test_configuration_reference_is_generated_from_the_code():
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    check = subprocess.run([sys.executable, str(root / "scripts" / "config_reference.py"), "--check"])
    assert check.returncode == 0, "docs/configuration.md is out of date: run python scripts/config_reference.py"


def test_another_file_with_a_finished_shard_name_is_an_error_naming_both(tmp_path):
    """Issue 26, case 1: ``split a/x`` then ``split b/x`` into one --out replaced a's documents
    (exit 0, a warning). Now b's shard fails naming both files, a's tables stay, and the same file
    moved elsewhere is still the finished shard."""
    update = PUBMED / "pmparser" / "updatefiles" / "pubmed26n1335.xml.gz"
    if not update.exists():
        pytest.skip("shared data missing")
    a, b, moved = (tmp_path / d for d in ("a", "b", "moved"))
    for d in (a, b, moved):
        d.mkdir()
    shutil.copy(update, a / "pubmed.xml.gz")
    shutil.copy(sample_input(), b / "pubmed.xml.gz")
    shutil.copy(update, moved / "pubmed.xml.gz")
    out = tmp_path / "o"
    assert invoke("split", a / "pubmed.xml.gz", "--out", out).exit_code == 0
    before = read(out, "documents", "pubmed")
    result = invoke("split", b / "pubmed.xml.gz", "--out", out, "--summary-json", tmp_path / "s.json")
    assert result.exit_code == 1, result.output
    error = json.loads((tmp_path / "s.json").read_text())["failed"]["pubmed"]
    assert "ShardCollision" in error and str(a / "pubmed.xml.gz") in error and str(b / "pubmed.xml.gz") in error
    assert read(out, "documents", "pubmed").equals(before)
    again = invoke("split", moved / "pubmed.xml.gz", "--out", out)
    assert again.exit_code == 0 and "1 skipped" in again.output


def test_a_same_size_edit_in_the_middle_of_a_big_input_is_redone(tmp_path):
    """Issue 26, case 2: the identity hashed the first and last MiB only, so an edit keeping the
    size in the middle of a file over 2 MiB kept the old text. Now the whole content is hashed."""
    medline = PUBMED / "medline16n0902.xml.gz"
    if not medline.exists():
        pytest.skip("shared data missing")
    data = gzip.decompress(medline.read_bytes())
    assert len(data) > 3 << 20
    title = data.index(b"<ArticleTitle>", len(data) // 2) + len(b"<ArticleTitle>")
    old = data[title : data.index(b"</ArticleTitle>", title)]
    new = old[::-1].replace(b"<", b" ").replace(b">", b" ").replace(b"&", b" ")  # same length, reversed
    xml = tmp_path / "medline16n0902.xml"
    xml.write_bytes(data)
    out = tmp_path / "o"
    assert invoke("split", xml, "--out", out).exit_code == 0
    xml.write_bytes(data[:title] + new + data[title + len(old):])
    assert xml.stat().st_size == len(data)
    result = invoke("split", xml, "--out", out)
    assert result.exit_code == 0 and "1 done" in result.output, result.output
    texts = read(out, "documents", "medline16n0902").column("text").to_pylist()
    assert new.decode() in texts and old.decode() not in texts


@pytest.mark.parametrize("damage", ["truncated", "missing", "other rows"])
def test_a_damaged_finished_shard_is_reported_by_verify_and_redone_by_a_rerun(tmp_path, damage):
    """Issue 26, case 4: a marker whose table file was missing or truncated was trusted (a rerun
    skipped the shard; read_table dropped it or raised an Arrow error)."""
    update = PUBMED / "pmparser" / "updatefiles" / "pubmed26n1335.xml.gz"
    if not update.exists():
        pytest.skip("shared data missing")
    out, clean = tmp_path / "o", tmp_path / "clean"
    for target in (out, clean):
        assert invoke("split", update, sample_input(), "--out", target).exit_code == 0
    assert invoke("verify", out).exit_code == 0
    sentences = out / "sentences" / "pubmed26n1335.parquet"
    if damage == "truncated":
        sentences.write_bytes(sentences.read_bytes()[: sentences.stat().st_size // 2])
    elif damage == "missing":
        sentences.unlink()
    else:  # a valid file, but another shard's
        shutil.copy(out / "sentences" / "sample-pubmed.parquet", sentences)
    result = invoke("verify", out)
    assert result.exit_code == 1 and "damaged pubmed26n1335: its sentences table" in result.output, result.output
    assert "2 finished shards checked, 1 damaged" in result.output
    with pytest.raises(bulkner.outputs.tables.DamagedShard, match="pubmed26n1335"):
        bulkner.read_table(str(out), "sentences")
    assert bulkner.read_table(str(out), "documents").num_rows  # the other tables of the shard are whole
    rerun = invoke("split", update, sample_input(), "--out", out)
    assert rerun.exit_code == 0 and "(1 redone: tables damaged)" in rerun.output and "1 skipped" in rerun.output, rerun.output
    assert invoke("verify", out).exit_code == 0
    for table in ("documents", "sentences", "tombstones"):
        assert bulkner.read_table(str(out), table).equals(bulkner.read_table(str(clean), table))


def test_a_second_run_into_a_directory_in_use_is_refused_and_deletes_nothing(tmp_path):
    """Issue 26, case 10: two runs over overlapping inputs on one --out deleted each other's
    temporary files. Now the directory is locked for a run (flock: released even when killed)."""
    from bulkner.outputs.writer import OutputDir

    out = tmp_path / "o"
    assert invoke("split", sample_input(), "--out", out).exit_code == 0
    (out / "_done" / "sample-pubmed.json").unlink()  # to be redone by the runs below
    working = out / "documents" / ".sample-pubmed.parquet.tmp-0123456789abcdef"
    working.write_bytes(b"a file the holding run is writing")
    with OutputDir(str(out)).lock():
        result = invoke("split", sample_input(), "--out", out)
        assert result.exit_code == 2 and "is in use by another bulkner run (pid" in result.output, result.output
        assert working.exists()
    assert invoke("split", sample_input(), "--out", out).exit_code == 0  # released: the next run goes on
    assert not working.exists()  # now an orphan of a finished run, removed


def test_an_output_directory_inside_an_input_folder_is_not_read_as_input(tmp_path):
    """Issue 26, case 10: with --out inside the input folder, the second run read its own Parquet
    files as inputs."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    shutil.copy(sample_input(), folder / "pubmed26n0001.xml.gz")
    for attempt in range(2):
        result = invoke("split", folder, "--out", folder / "out", "--summary-json", tmp_path / "s.json")
        assert result.exit_code == 0, result.output
        shards = json.loads((tmp_path / "s.json").read_text())["shards"]
        assert shards == {"done": 1 - attempt, "skipped": attempt, "failed": 0}
    assert sorted(p.name for p in (folder / "out" / "documents").iterdir()) == ["pubmed26n0001.parquet"]
