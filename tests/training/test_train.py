"""Fine-tuning on LLMNER targets: examples built from real gold corpora, and short training runs of
the tiny random Llama (full and LoRA) that overfit, reload, decode their target and resume exactly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bulkner.corpora.cmeee import CMEEE_TYPES
from bulkner.corpora.registry import read_corpus
from bulkner.checkpoints import end_token_ids, resolve_model
from bulkner.pipeline.tagger import segment
from bulkner.pipeline.prompt import PromptBuilder
from bulkner.tagging import parse
from bulkner.training.data import IGNORE, TrainSource, answer_end_id, batch_plan, build_examples, split_eval
from bulkner.types import resolve_types

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

NER = Path(__file__).resolve().parents[3] / "shared" / "data" / "ner"
BC5CDR_DEV = NER / "bc5cdr" / "CDR_DevelopmentSet.PubTator.txt"
CMEEE_DEV = NER / "cmeee" / "CMeEE-V2_dev.json"
LLAMA_PROJECTIONS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def needs(*paths: Path) -> None:
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        pytest.skip(f"shared data not found: {missing}")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model's ops are too small for threads to pay (and 2-core CI machines are shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_answer_ends_with_the_token_engines_stop_on(tokenizer):
    end = answer_end_id(tokenizer)
    assert end == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert end in end_token_ids(tokenizer)


def test_examples_are_the_inference_prompt_plus_a_target_that_parses_back_to_gold(tokenizer):
    needs(BC5CDR_DEV)
    source = TrainSource("pubtator", str(BC5CDR_DEV), documents=4)
    examples, report = build_examples([source], tokenizer, 1024)
    gold = read_corpus("pubtator", BC5CDR_DEV).documents[:4]
    sentences = {s.key: s for s in segment([g.document for g in gold], 2000)[0]}
    builder = PromptBuilder(resolve_types(["Chemical", "Disease"]), tokenizer, 1024)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert report["sources"][0]["types"] == ["Chemical", "Disease"]
    assert report["examples"] == len(examples) == len(sentences) > 10
    found = set()
    for example in examples:
        sentence = sentences[example.key.split(":", 1)[1]]
        prompt = list(example.input_ids[: example.prompt_length])
        assert prompt == list(builder.build(sentence).token_ids)
        assert example.labels[: example.prompt_length] == [IGNORE] * example.prompt_length
        answer = example.labels[example.prompt_length :]
        assert answer == list(example.input_ids[example.prompt_length :]) and IGNORE not in answer
        assert answer[-1] == end and end not in answer[:-1]
        text = tokenizer.decode(answer[:-1])
        assert text == example.target
        result = parse(text, sentence.text, ["Chemical", "Disease"])
        assert not result.rejects
        found |= {(sentence.doc_id, sentence.passage_index, sentence.start + s.start, sentence.start + s.end, s.type) for s in result.spans}
    expected = {(g.document.doc_id, i, s.start, s.end, s.type) for g in gold for i, s in g.mentions}
    assert len(expected - found) == report["cut_mentions"]
    assert found <= expected and len(found) > 20


def test_sources_keep_their_own_type_lists(tokenizer, tmp_path):
    needs(BC5CDR_DEV, CMEEE_DEV)
    types_file = tmp_path / "cmeee_types.json"
    types_file.write_text(json.dumps(CMEEE_TYPES, ensure_ascii=False), encoding="utf-8")
    sources = [
        TrainSource("pubtator", str(BC5CDR_DEV), ("Disease",), documents=2),
        TrainSource("cmeee", str(CMEEE_DEV), documents=5),
    ]
    examples, report = build_examples(sources, tokenizer, 4096, types_file)
    first, second = report["sources"]
    assert first["types"] == ["Disease"] and first["other_type_mentions"] > 0
    assert second["types"] == sorted(CMEEE_TYPES) and second["documents"] == 5
    assert report["examples"] == first["examples"] + second["examples"] == len(examples)
    prompts = {e.key.split(":")[0]: tokenizer.decode(e.input_ids[: e.prompt_length]) for e in examples}
    assert "Entity types include: Disease\n" in prompts["0"]
    assert "Entity types include: bod, dep, dis, dru, equ, ite, mic, pro, sym\n" in prompts["1"]
    assert "Chemical" not in "".join(e.target for e in examples if e.key.startswith("0:"))


def test_too_long_sentences_are_skipped_and_counted(tokenizer):
    needs(BC5CDR_DEV)
    source = TrainSource("pubtator", str(BC5CDR_DEV), documents=4)
    examples, report = build_examples([source], tokenizer, 300)
    assert report["skipped_too_long"] > 0
    assert report["examples"] + report["skipped_too_long"] == report["sentences"]
    assert all(len(e.input_ids) <= 300 for e in examples) and examples


def test_batch_plan_and_eval_split_are_deterministic_partitions():
    lengths = [5, 80, 12, 40, 7, 33, 90, 21, 64, 3]
    plan = batch_plan(lengths, 3, seed=1, epoch=2)
    assert plan == batch_plan(lengths, 3, seed=1, epoch=2) != batch_plan(lengths, 3, seed=1, epoch=3)
    assert sorted(i for b in plan for i in b) == list(range(10)) and max(map(len, plan)) == 3
    train, held = split_eval(list(range(10)), 0.2, seed=0)
    assert len(held) == 2 and sorted(train + held) == list(range(10))


def test_source_spec_and_config_validation():
    from bulkner.training.train import TrainConfig

    assert TrainSource.parse("pubtator:data/x.txt:Chemical,Disease") == TrainSource("pubtator", "data/x.txt", ("Chemical", "Disease"))
    assert TrainSource.parse("cmeee:data/dev.json").types is None
    assert TrainSource.parse("brat:data/jnlpba.tar.gz:CellLine:300") == TrainSource("brat", "data/jnlpba.tar.gz", ("CellLine",), 300)
    with pytest.raises(ValueError, match="unknown corpus format"):
        TrainSource("xml", "x")
    good = dict(model="m", out="o", sources=("pubtator:x.txt",))
    assert TrainConfig(**good).sources == (TrainSource("pubtator", "x.txt"),)
    for bad in ({"lr": 0}, {"epochs": 0}, {"eval_fraction": 1.0}, {"lora_dropout": 1.0}, {"device": "tpu"}, {"sources": ()},
                {"answer_format": "json"}):
        with pytest.raises(ValueError):
            TrainConfig(**(good | bad))


def run(model_dir: Path, out: Path, resume: bool = False, **overrides) -> dict:
    """A short CPU training run on the first BC5CDR development documents."""
    from bulkner.training.train import TrainConfig, train

    settings = dict(model=str(model_dir), out=str(out), sources=(TrainSource("pubtator", str(BC5CDR_DEV), documents=2),),
                    max_length=512, warmup_ratio=0.0, keep_checkpoints=10) | overrides
    return train(TrainConfig(**settings), progress=False, resume=resume)


def losses(out: Path) -> list[float]:
    return [entry["loss"] for entry in map(json.loads, (out / "train_log.jsonl").read_text().splitlines()) if "loss" in entry]


def test_full_finetune_overfits_reloads_and_decodes_its_target(tiny_model_dir, tokenizer, tmp_path):
    needs(BC5CDR_DEV)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    stats = run(tiny_model_dir, tmp_path, lora=False, limit=1, batch_size=1, epochs=30, lr=3e-2)
    curve = losses(tmp_path)
    assert stats["steps"] == len(curve) == 30 and curve[-1] < 0.01 * curve[0]
    final = Path(resolve_model(str(tmp_path / "final")))
    assert json.loads((final / "training.json").read_text())["final_loss"] == pytest.approx(curve[-1])
    model = AutoModelForCausalLM.from_pretrained(final).eval()
    example = build_examples([TrainSource("pubtator", str(BC5CDR_DEV), documents=2)], AutoTokenizer.from_pretrained(final), 512)[0][0]
    prompt = torch.tensor([example.input_ids[: example.prompt_length]])
    answer = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=200, do_sample=False,
                            eos_token_id=end_token_ids(tokenizer))[0, example.prompt_length :]
    assert answer.tolist() == list(example.input_ids[example.prompt_length :])


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir, tmp_path_factory):
    """Ten LoRA steps (4 examples + 1 held out, batches of 2, dropout on), a checkpoint every 3 steps."""
    needs(BC5CDR_DEV)
    out = tmp_path_factory.mktemp("lora")
    settings = dict(lora=True, limit=5, batch_size=2, epochs=5, lr=5e-2, lora_dropout=0.1, save_every=3, eval_fraction=0.2)
    return out, run(tiny_model_dir, out, **settings), settings


def test_lora_loss_drops_and_adapter_loads_with_peft(lora_run, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out, stats, _ = lora_run
    curve = losses(out)
    assert stats["steps"] == 10 and curve[-1] < 0.8 * curve[0]
    assert stats["data"]["train_examples"] == 4 and stats["data"]["eval_examples"] == 1
    evals = [e["eval_loss"] for e in map(json.loads, (out / "train_log.jsonl").read_text().splitlines()) if "eval_loss" in e]
    assert len(evals) == 5 and stats["eval_loss"] == pytest.approx(evals[-1])
    config = json.loads((out / "final" / "adapter_config.json").read_text())
    assert set(config["target_modules"]) == LLAMA_PROJECTIONS and config["r"] == 16
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6", "checkpoint-9"]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out / "final")
    assert sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) > 0


def test_resume_from_a_checkpoint_gives_the_same_run(lora_run, tiny_model_dir, tmp_path):
    out, stats, settings = lora_run
    shutil.copytree(out / "checkpoint-3", tmp_path / "checkpoint-3")
    resumed = run(tiny_model_dir, tmp_path, resume=True, **settings)
    assert resumed["resumed_from"].endswith("checkpoint-3") and resumed["steps"] == 10
    assert resumed["final_loss"] == pytest.approx(stats["final_loss"], rel=1e-5)
    assert losses(tmp_path) == pytest.approx(losses(out)[3:], rel=1e-5)


@pytest.mark.parametrize("lora", [False, True])
def test_shared_prefix_step_gives_the_plain_loss_and_gradients(tiny_model_dir, tokenizer, lora):
    """The instruction computed once per batch and broadcast: same loss, same gradients (fp32)."""
    needs(BC5CDR_DEV)
    from transformers import AutoModelForCausalLM

    from bulkner.training.train import TrainConfig, load_model
    from bulkner.training.step import plain_loss_sum, prefix_loss_sum

    examples = build_examples([TrainSource("pubtator", str(BC5CDR_DEV), documents=2)], tokenizer, 512)[0][:5]
    assert len({e.prefix for e in examples}) == 1 and len({e.suffix_length for e in examples}) > 1  # padding is exercised
    config = TrainConfig(model=str(tiny_model_dir), out="unused", sources=("pubtator:x",), lora=lora, lora_dropout=0.0)
    torch.manual_seed(0)
    model = load_model(config, str(tiny_model_dir), None) if lora else AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    if lora:  # LoRA's B starts at zero: move it so the adapter's gradients are not trivially equal
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.data.normal_(0, 0.05)
    results = []
    for step in (plain_loss_sum, prefix_loss_sum):
        model.zero_grad(set_to_none=True)
        loss, count = step(model, examples, tokenizer.pad_token_id, torch.device("cpu"), autocast=False)
        loss.backward()
        results.append((loss.item(), count, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (plain, plain_count, plain_grads), (shared, shared_count, shared_grads) = results
    assert shared_count == plain_count == sum(len(e.input_ids) - e.prompt_length for e in examples)
    assert shared == pytest.approx(plain, rel=1e-5)
    assert plain_grads.keys() == shared_grads.keys() and len(plain_grads) > 4
    for name, grad in plain_grads.items():
        scale = grad.abs().max().clamp_min(1e-12)
        assert (shared_grads[name] - grad).abs().max() / scale < 1e-4, name


def test_shared_prefix_step_refuses_mixed_prefixes(tiny_model_dir, tokenizer, tmp_path):
    needs(BC5CDR_DEV)
    from transformers import AutoModelForCausalLM

    from bulkner.training.step import prefix_loss_sum

    sources = [TrainSource("pubtator", str(BC5CDR_DEV), ("Chemical",), documents=1), TrainSource("pubtator", str(BC5CDR_DEV), ("Disease",), documents=1)]
    examples = build_examples(sources, tokenizer, 512)[0]
    mixed = [examples[0], examples[-1]]
    assert mixed[0].prefix != mixed[1].prefix
    with pytest.raises(ValueError, match="one common"):
        prefix_loss_sum(AutoModelForCausalLM.from_pretrained(tiny_model_dir), mixed, 0, torch.device("cpu"), autocast=False)


def test_batch_plan_keeps_prefix_groups_apart_and_bounds_padded_tokens():
    lengths = [5, 80, 12, 40, 7, 33, 90, 21, 64, 3, 50, 50]
    groups = [i % 2 for i in range(len(lengths))]
    plan = batch_plan(lengths, 8, seed=0, epoch=0, groups=groups, max_tokens=100)
    assert sorted(i for b in plan for i in b) == list(range(len(lengths)))
    for batch in plan:
        assert len({groups[i] for i in batch}) == 1
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 100


def test_a_resumed_run_can_be_shortened_and_still_cools_down(lora_run, tiny_model_dir, tmp_path):
    out, stats, settings = lora_run
    shutil.copytree(out / "checkpoint-3", tmp_path / "checkpoint-3")
    resumed = run(tiny_model_dir, tmp_path, resume=True, **settings, max_steps=6)
    entries = [e for e in map(json.loads, (tmp_path / "train_log.jsonl").read_text().splitlines()) if "lr" in e]
    assert resumed["steps"] == resumed["total_steps"] == 6 == entries[-1]["step"]
    assert entries[-1]["lr"] == 0.0 and entries[0]["lr"] > 0


def test_a_run_can_start_from_an_adapter(lora_run, tiny_model_dir, tmp_path):
    """--init-adapter: the adapter's weights (and rank, whatever lora_r says) as trainable fp32
    parameters, then a run with a fresh schedule."""
    from safetensors.torch import load_file

    from bulkner.training.train import TrainConfig, load_model

    out, _, settings = lora_run
    saved = load_file(out / "final" / "adapter_model.safetensors")
    config = TrainConfig(model=str(tiny_model_dir), out="unused", sources=("pubtator:x",), lora_r=4, init_adapter=str(out / "final"))
    params = {n: p for n, p in load_model(config, str(tiny_model_dir), None).named_parameters() if p.requires_grad}
    assert len(params) == len(saved) > 0
    for name, p in params.items():
        key = name.replace(".default", "")
        assert p.dtype == torch.float32 and torch.equal(p.data, saved[key].float()), name
    stage2 = run(tiny_model_dir, tmp_path, **(settings | dict(save_every=0, eval_fraction=None, epochs=1)), init_adapter=str(out / "final"))
    assert stage2["steps"] == stage2["total_steps"] > 0 and stage2["config"]["init_adapter"] == str(out / "final")
    assert json.loads((tmp_path / "final" / "adapter_config.json").read_text())["r"] == 16
    with pytest.raises(FileNotFoundError, match="adapter_config"):
        run(tiny_model_dir, tmp_path / "again", lora=True, limit=2, init_adapter=str(tmp_path))
