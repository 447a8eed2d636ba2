"""The HTML report on output directories written from real GENIA nested gold (no model): two
finished shards, an unfinished one, rejects, a real fingerprint; a split output; and a document
whose text, entity type and shard name try to inject HTML. The page is checked as text (counts
equal the tables', escaping) and in headless Chromium (no errors, plots, nested bars, search)."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import lxml.html
import pytest

from bulkner.config import RunConfig
from bulkner.corpora import GoldDocument
from bulkner.corpora.registry import read_corpus
from bulkner.fingerprint import fingerprint
from bulkner.pipeline.tagger import segment
from bulkner.outputs.report import Tagged, build_report, chart, levels, pieces, render, sentence_html, write_report
from bulkner.schema import Document, Entity, Passage, Reject, Span
from bulkner.corpora.gold import sentence_gold
from bulkner.outputs.tables import read_table
from bulkner.types import resolve_types
from bulkner.outputs.writer import OutputDir, documents_table, entities_table, rejects_table, sentences_table
from tests.outputs.shards import write_tables

GENIA = Path(__file__).resolve().parents[3] / "shared" / "data" / "ner" / "genia" / "GENIAcorpus3.02.tgz"
HOSTILE_TEXT = 'The <b>IL-2 receptor</b> & "alpha" <script>alert(1)</script> binds IL-2 <img src=x onerror=alert(2)>.'
HOSTILE_TYPE = "<img src=y onerror=alert(3)>"
HOSTILE_SHARD = "shard-2<i>"


def hostile() -> GoldDocument:
    """A document whose text and user type are HTML: nested "IL-2 receptor" ⊃ "IL-2"."""
    outer = HOSTILE_TEXT.index("IL-2 receptor")
    script = HOSTILE_TEXT.index("<script>")
    mentions = [Span(outer, outer + 13, "Gene"), Span(outer, outer + 4, "Gene"),
                Span(script, script + len("<script>alert(1)</script>"), HOSTILE_TYPE)]
    return GoldDocument(Document("text:<script>x</script>", 1, (Passage("text", HOSTILE_TEXT),)), tuple((0, m) for m in mentions))


def write_shard(out: OutputDir, shard: str, golds: list[GoldDocument], tagged: bool, rejects: list[Reject]) -> dict:
    """Write ``golds`` as one shard (gold mentions as entities when ``tagged``) with its marker."""
    sentences, segment_rejects = segment([g.document for g in golds], 2000)
    rejects = rejects + segment_rejects
    tables = {"documents": documents_table([g.document for g in golds], shard), "sentences": sentences_table(sentences)}
    stats = {"shard": shard, "sentences": len(sentences), "seconds": 1.5 + len(sentences) / 100,
             "rejects_by_reason": dict(Counter(f"{r.stage}/{r.reason}" for r in rejects))}
    stats["sentences_per_second"] = round(len(sentences) / stats["seconds"], 2)
    if tagged:
        spans = sentence_gold(sentences, golds).spans
        found = [(s, m) for s in sentences for m in spans[s.key]]
        entities = [Entity(s, m.start + s.start, m.end + s.start, m.type, 0.5 + 0.125 * (k % 4), concept_id=f"C:{k % 7}" if k % 3 else None)
                    for k, (s, m) in enumerate(found)]
        tables["entities"] = entities_table(entities, shard)
        stats["entities_by_type"] = dict(Counter(e.type for e in entities))
    tables["rejects"] = rejects_table(rejects, shard)
    write_tables(out, shard, tables, stats)
    return stats


@pytest.fixture(scope="module")
def genia() -> list[GoldDocument]:
    if not GENIA.exists():
        pytest.skip(f"shared data not found at {GENIA}")
    return list(read_corpus("genia-xml", GENIA).documents[:40])


def output(root: Path, golds: list[GoldDocument], tagged: bool) -> str:
    out = OutputDir(str(root))
    config = RunConfig(out=str(root))
    out.claim(fingerprint(config, resolve_types(config.types), with_model=tagged))
    bad = [Reject("read", "malformed_xml", "pmid:1", "mismatched tag <b> & </i>"), Reject("parse", "unaligned_span", "pmid:2/0/1", "x")]
    write_shard(out, "shard-1", golds[:15], tagged, bad)
    write_shard(out, HOSTILE_SHARD, [hostile(), *golds[15:30]], tagged, bad[1:])
    unfinished = GoldDocument(Document("text:unfinished", 1, (Passage("text", "Zebra protein."),)), ((0, Span(0, 5, "Unfinished")),))
    write_shard(out, "shard-10", [unfinished, *golds[30:]], tagged, [Reject("read", "unfinished_reason", "y", "")])
    out.undo("shard-10")
    return str(root)


@pytest.fixture(scope="module")
def run(genia, tmp_path_factory) -> str:
    return output(tmp_path_factory.mktemp("report-run"), genia, tagged=True)


@pytest.fixture(scope="module")
def split_run(genia, tmp_path_factory) -> str:
    return output(tmp_path_factory.mktemp("report-split"), genia, tagged=False)


@pytest.mark.parametrize(
    "spans, rows",
    [
        ([], []),
        ([(0, 13), (0, 4)], [0, 1]),  # nested, same start: the outer span on top
        ([(0, 4), (0, 13)], [1, 0]),  # order given does not matter
        ([(5, 9), (0, 20), (2, 12)], [2, 0, 1]),  # three deep
        ([(0, 4), (4, 8), (8, 12)], [0, 0, 0]),  # touching spans share a row
        ([(0, 6), (4, 10), (8, 12)], [0, 1, 0]),  # crossing spans: two rows suffice
        ([(3, 7), (3, 7)], [0, 1]),  # the same span twice (two types)
    ],
)
def test_levels(spans, rows):
    assert levels(spans) == rows


@pytest.mark.parametrize(
    "text, spans, expected",
    [
        ("IL-2 receptor binds", [], ["IL-2 ", "receptor ", "binds"]),
        ("IL-2 receptor binds", [(0, 13), (0, 4)], ["IL-2", " ", "receptor", " ", "binds"]),
        ("a  b", [(1, 3)], ["a", "  ", "b"]),
        ("NF-kappaB", [(3, 9)], ["NF-", "kappaB"]),
        ("", [], []),
    ],
)
def test_pieces(text, spans, expected):
    found = pieces(text, spans)
    assert [text[a:b] for a, b in found] == expected
    assert "".join(text[a:b] for a, b in found) == text


def test_counts_equal_the_tables(run):
    report = build_report(run, sentences=1000)
    entities = read_table(run, "entities").to_pylist()
    assert report.entities_by_type == dict(Counter(e["type"] for e in entities))
    assert "Unfinished" not in report.entities_by_type and "shard-10" not in report.markers
    assert list(report.markers) == ["shard-1", HOSTILE_SHARD]
    for kind, top in report.top_mentions.items():
        counts = Counter(e["text"] for e in entities if e["type"] == kind)
        assert top == sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:20]
    assert report.top_concepts and set(report.top_concepts) <= set(report.top_mentions)
    for kind, top in report.top_concepts.items():
        linked = [e for e in entities if e["type"] == kind and e["concept_id"]]
        counts = Counter(e["concept_id"] for e in linked)
        assert [n for _, n in top] == sorted(counts.values(), reverse=True)[:20]
        for label, n in top:
            concept, text = label.split(" ", 1)
            texts = Counter(e["text"] for e in linked if e["concept_id"] == concept)
            assert counts[concept] == n and text == min(texts, key=lambda t: (-texts[t], t))
    rejects = read_table(run, "rejects").to_pylist()
    assert report.rejects_by_reason == dict(Counter(f"{r['stage']}/{r['reason']}" for r in rejects))
    assert report.rows == {t: read_table(run, t).num_rows for t in report.rows}
    keys = {(e["doc_id"], e["passage_index"], e["sentence_index"]) for e in entities}
    assert report.candidates == len(keys) == len(report.sentences)  # fewer candidates than asked: all


def test_viewer_sentences_carry_their_entities(run):
    report = build_report(run, sentences=1000)
    entities = read_table(run, "entities").to_pylist()
    sentences = {(s["doc_id"], s["passage_index"], s["sentence_index"]): s for s in read_table(run, "sentences").to_pylist()}
    for tagged in report.sentences:
        doc_id, passage, index = tagged.key.rsplit("/", 2)
        key = (doc_id, int(passage), int(index))
        sentence = sentences[key]
        assert tagged.text == sentence["text"]
        mine = [e for e in entities if (e["doc_id"], e["passage_index"], e["sentence_index"]) == key]
        expected = sorted((e["start"] - sentence["start"], e["end"] - sentence["start"], e["type"], e["text"]) for e in mine)
        assert [(s, e, t, tagged.text[s:e]) for s, e, t, _ in tagged.spans] == expected


def test_sample_is_bounded_and_seeded(run):
    first, again, other = (build_report(run, sentences=7, seed=s) for s in (0, 0, 1))
    assert len(first.sentences) == 7 and first.candidates > 7
    assert first.sentences == again.sentences
    assert [s.key for s in first.sentences] != [s.key for s in other.sentences]
    assert build_report(run, sentences=0).sentences == ()
    with pytest.raises(ValueError, match="-1"):
        build_report(run, sentences=-1)


def test_page_escapes_corpus_text(run):
    page = render(build_report(run, sentences=1000))
    for raw in ("<script>alert", "<img src=", "<b>IL-2", "shard-2<i>"):
        assert raw not in page
    assert page.count("<script") == 1  # ours
    tree = lxml.html.fromstring(page)
    assert not tree.xpath("//img | //b | //i")
    [sentence] = [s for s in tree.xpath('//div[@class="sent"]') if "alert(1)" in s.text_content()]
    assert "".join(sentence.xpath('.//span[@class="seg"]/text()')) == HOSTILE_TEXT  # the text survives escaping unchanged
    assert HOSTILE_SHARD in sentence.xpath('.//span[@class="shard"]/text()')
    labels = sentence.xpath('.//span[@class="lab"]/text()')
    assert sorted(labels) == sorted(["Gene", "Gene", HOSTILE_TYPE])
    assert tree.xpath('//section[@id="types"]//svg//rect[@class="bar"]')
    assert '"hash"' in tree.xpath('//section[@id="fingerprint"]/pre')[0].text_content()


def test_nested_spans_are_stacked():
    text = "IL-2 receptor"
    fragment = lxml.html.fromstring(sentence_html(Tagged("s", "d/0/0", text, ((0, 13, "P", 1.0), (0, 4, "P", 1.0))), {"P": "t0"}))
    first = fragment.xpath('.//span[@class="seg"]')[0]
    assert first.text == "IL-2"
    assert [b.get("style") for b in first.xpath('./span[starts-with(@class, "bar")]')] == ["--level:0", "--level:1"]
    assert fragment.get("style") == "--depth:2"


def test_many_shards_become_columns():
    items = [(f"shard-{i}<x>", float(i)) for i in range(200)]
    svg = lxml.html.fromstring(chart(items, ["#123456"]))
    assert len(svg.xpath(".//rect")) == 200 and not svg.xpath(".//text[@class='label']")
    assert svg.xpath(".//rect")[-1].xpath("./title/text()") == ["shard-199<x>: 199.00"]
    assert len(lxml.html.fromstring(chart(items[:60], ["#123456"] * 60)).xpath(".//text[@class='label']")) == 60


def test_split_output(split_run):
    report = build_report(split_run)
    assert report.entities_by_type is None and report.sentences == ()
    page = render(report)
    assert "no entities table" in page
    assert lxml.html.fromstring(page).xpath('//section[@id="throughput"]//rect[@class="bar"]')


def test_no_finished_shard_and_no_directory(tmp_path):
    OutputDir(str(tmp_path / "fresh")).claim({"hash": "x"})
    page = render(build_report(str(tmp_path / "fresh")))
    assert "No shard has finished yet" in page and "No rejects." in page
    with pytest.raises(FileNotFoundError, match="no output directory"):
        build_report(str(tmp_path / "missing"))


def test_write_report_replaces_the_file(run, tmp_path):
    path = tmp_path / "report.html"
    path.write_text("old")
    write_report(run, path, sentences=5)
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert os.listdir(tmp_path) == ["report.html"]


# ---------------------------------------------------------------- in a real browser


def matches(sentence: Tagged, query: str) -> bool:
    """What the search box keeps: every word of ``query`` in the text or a ``type: mention``."""
    searched = " ".join([sentence.text, *(f"{t}: {sentence.text[s:e]}" for s, e, t, _ in sentence.spans)]).lower()
    return all(word in searched for word in query.lower().split())


def chromium() -> str | None:
    """The browser: ``BULKNER_CHROMIUM``, else Debian's ``chromium`` (``apt-get install chromium``)."""
    return os.environ.get("BULKNER_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install playwright)")
    binary = chromium()
    if binary is None:
        pytest.skip("no Chromium: apt-get install chromium (or set BULKNER_CHROMIUM to a Chromium binary)")
    with playwright.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=binary, args=["--no-sandbox"])
        yield launched
        launched.close()


def test_page_in_chromium(run, browser, tmp_path):
    pytest.importorskip("PIL", reason="pillow not installed (pip install pillow)")
    from PIL import Image, ImageStat

    path = tmp_path / "report.html"
    report = write_report(run, path, sentences=300)
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    problems, requests = [], []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")

    assert problems == []
    assert requests == [path.as_uri()]  # self-contained: nothing else is fetched
    for section in ("types", "mentions", "throughput", "rejects"):
        assert page.locator(f"#{section} svg rect.bar").count() > 0, section
    assert page.locator("#types svg rect.bar").count() == len(report.entities_by_type)

    # nested: the "IL-2" piece of "IL-2 receptor" has two bars, stacked under the text
    hostile_sentence = page.locator(".sent", has_text="alert(1)")
    seg = hostile_sentence.locator(".seg").filter(has_text="IL-2").first
    text_box = seg.bounding_box()
    bars = [b.bounding_box() for b in seg.locator(".bar").all()]
    assert len(bars) == 2 and all(b["height"] > 0 and b["width"] > 0 for b in bars)
    assert text_box["y"] + 10 < bars[0]["y"] < bars[1]["y"]
    assert hostile_sentence.locator(".lab", has_text=HOSTILE_TYPE).is_visible()

    total = page.locator("#sentences .sent").count()
    assert total == len(report.sentences) == min(300, report.candidates)
    for query in ("receptor", "CellType", "celltype: t cells"):  # text, a type, a type with its mention
        expected = sum(matches(s, query) for s in report.sentences)
        page.fill("#search", query)
        assert 0 < page.locator("#sentences .sent:visible").count() == expected < total, query
        assert page.inner_text("#shown") == str(expected)
    page.fill("#search", "no such words anywhere")
    assert page.locator("#sentences .sent:visible").count() == 0
    page.fill("#search", "")
    assert page.locator("#sentences .sent:visible").count() == total

    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot))
    assert ImageStat.Stat(Image.open(shot).convert("L")).stddev[0] > 10
    plot = tmp_path / "types.png"
    page.locator("#types svg").screenshot(path=str(plot))
    histogram = Image.open(plot).convert("L").histogram()
    assert sum(histogram[:200]) / sum(histogram) > 0.02  # the bars are drawn, not a white box
    page.locator("#viewer").scroll_into_view_if_needed()
    page.screenshot(path=str(tmp_path / "viewer.png"))
    assert problems == []
    page.close()


def test_report_command_line(tmp_path):
    from typer.testing import CliRunner

    from bulkner.cli import app, sample_input

    runner = CliRunner()
    assert runner.invoke(app, ["split", sample_input(), "--out", str(tmp_path / "o")]).exit_code == 0
    done = runner.invoke(app, ["report", str(tmp_path / "o"), "--output", str(tmp_path / "r.html")])
    assert done.exit_code == 0 and "no entities table" in done.output, done.output
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
    bad = runner.invoke(app, ["report", str(tmp_path / "nope"), "--output", str(tmp_path / "x.html")])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
