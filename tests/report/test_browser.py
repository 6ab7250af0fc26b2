"""moe-report in a real browser: Debian's headless Chromium driven by Playwright for Python (no browser
download), the page opened from file:// with every network request refused and counted.

`make test` installs the `chromium` package when apt can (Makefile target `browser`); the test is
skipped, saying why, only where /usr/bin/chromium is absent. Set MOETOOLS_REPORT_SCREENSHOT=PATH to
keep the screenshot of the test's (synthetic) page. The README's picture, formats/report.png, is one
card of the demo's MoE report (`make demo`, judged with `moe-score ... --backend embedding` and joined),
taken the same way with Playwright and the system Chromium: `page.locator("#card-2-1").screenshot(...)`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from moetools.report import build_report
from tests.report_fixture import build_inputs

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium: install Debian's chromium "
                                "package (`make browser` does when run as root with apt) to run the browser test")


@pytest.fixture(scope="module")
def report_file(tmp_path_factory):
    """Built before the browser starts (Playwright's sync API holds an event loop that moe-explain's would meet)."""
    directory = tmp_path_factory.mktemp("report")
    out = directory / "report.html"
    build_report(list(build_inputs(directory).values()), out, compress=True)  # the large reports' encoding
    return out


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory, report_file):
    """A Playwright page of a fresh headless Chromium profile, with console errors and requests recorded."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make install)")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), args=ARGS, headless=True, viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.problems, page.requests = [], []
        page.on("console", lambda message: page.problems.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: page.problems.append(str(error)))
        page.on("request", lambda request: page.requests.append(request.url))

        def refuse_network(route):
            if route.request.url.startswith(("file:", "data:")):
                route.continue_()
            else:
                page.problems.append(f"network request: {route.request.url}")
                route.abort()

        context.route("**/*", refuse_network)
        yield page
        context.close()


def test_report_opens_filters_and_jumps_in_chromium(browser_page, report_file, tmp_path):
    page = browser_page
    url = report_file.resolve().as_uri()

    page.goto(url)
    page.wait_for_selector("body[data-ready='1']")
    assert page.locator("#overview svg").count() >= 1           # the bar charts rendered
    assert page.locator("#overview figure.map canvas").count() >= 4   # the maps drawn from the data
    assert page.locator(".card").count() == 16                  # 2 layers x 8 experts, one page
    assert page.locator(".card .tok.routed").count() > 0 and page.locator(".card .hist .bar").count() > 0
    assert "16 of 16 experts" in page.locator("#count").inner_text()
    assert page.locator("table.eval").count() == 1 and page.locator("table.sets").count() == 1

    # every card shows the scorer's verdicts: a ✓/✗ strip of the judged holdout samples and the examples
    # shown with their truth and prediction, the LLM scorer named; the experts an LLM labelled show both labels
    assert page.locator(".card .strip").count() == 16
    assert page.locator(".card .vbox.ok").count() > 0 and page.locator(".card .vbox.bad").count() > 0
    badges = page.locator(".card .verdict").all_inner_texts()
    assert len(badges) == 16 * 4 and all(b[0] in "✓✗≈?" and "truth" in b and "said" in b for b in badges)
    assert any(b.startswith("✗ holdout.positive[") for b in badges)
    assert page.locator(".card .scorer").first.inner_text() == \
        "scorer: LLM scorer openai (stub-scorer), prompt paper 000 appendix A.2"
    assert page.locator(".card .labelbox.other").count() == 4    # moe-select's 2 + 2: an LLM and the offline label
    first_other = page.locator(".card:has(.labelbox.other)").first
    assert first_other.locator(".by").first.inner_text() == "explainer: openai (stub-model)"
    # each label's evidence beside it (formats/labels.md evidence)
    assert first_other.locator(".evidence").first.inner_text().startswith("evidence: rests on ")

    screenshot = tmp_path / "report.png"
    page.screenshot(path=str(screenshot))
    from PIL import Image

    with Image.open(screenshot) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50            # not a blank page
    if os.environ.get("MOETOOLS_REPORT_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["MOETOOLS_REPORT_SCREENSHOT"])

    # search: only the cards one of whose labels (or layer/expert) holds the text; the offline label of a card
    # whose first label is an LLM's is searched too
    word = first_other.locator(".labelbox.other .label").inner_text().split('"')[1]   # a token it quotes
    page.fill("#search", word)
    shown = page.locator(".card")
    assert 0 < shown.count() < 16 and page.locator(".card .labelbox.other").count() >= 1
    assert all(word.lower() in " ".join(card.locator(".label").all_inner_texts()).lower() for card in shown.all())
    page.fill("#search", "no expert has this label")
    assert page.locator(".card").count() == 0
    page.fill("#search", "")

    # sort by a score: the first card has the highest value
    page.select_option("#sort", "das:code")
    values = page.evaluate("""() => { const d = window.moeReport;
        const i = d.keys.indexOf('das:code'); return d.experts.map(e => [e.l + '/' + e.e, e.v[i]]); }""")
    best = max(values, key=lambda item: item[1])[0]
    assert page.locator(".card").first.get_attribute("data-key") == best

    # the fragment link: a card is scrolled to and highlighted, from a fresh load and from a hash change
    page.goto(url + "#2/5")
    page.wait_for_selector("body[data-ready='1']")
    target = page.locator("#card-2-5")
    assert target.get_attribute("class") == "card target"
    assert page.evaluate("() => { const r = document.getElementById('card-2-5').getBoundingClientRect();"
                         " return r.top >= 0 && r.top < window.innerHeight; }")
    page.fill("#search", "zzz-nothing")                          # filtered out, the link still finds it
    page.evaluate("() => { location.hash = '0/3'; }")
    page.wait_for_selector("#card-0-3.target")

    assert page.problems == []                                   # no console errors, no network
    assert all(request.startswith(("file:", "data:")) for request in page.requests), page.requests


def _cell_centre(page, map_id: str, row: int, expert: int) -> tuple[float, float]:
    """Viewport position of one map cell (the canvas is one pixel per cell, scaled)."""
    canvas = page.locator(f"#{map_id} canvas")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    layers, experts = page.evaluate("() => [window.moeReport.map_layers.length, window.moeReport.num_experts]")
    return box["x"] + box["width"] * (expert + 0.5) / experts, box["y"] + box["height"] * (row + 0.5) / layers


def test_map_hover_shows_the_value_and_a_click_opens_the_card(browser_page, report_file):
    page = browser_page
    page.goto(report_file.resolve().as_uri())
    page.wait_for_selector("body[data-ready='1']")
    map_id = page.locator("figure.map:has(.maphead b:text-is('das'))").get_attribute("id")
    page.select_option(f"#{map_id} select", "1")                 # the second domain: legal
    x, y = _cell_centre(page, map_id, 1, 5)                      # layer 2, expert 5
    page.mouse.move(x, y)
    tip = page.locator("#map-tip")
    assert tip.is_visible() and (tip.get_attribute("data-layer"), tip.get_attribute("data-expert")) == ("2", "5")
    want = page.evaluate("""() => { const d = window.moeReport, i = d.keys.indexOf('das:legal');
        return d.experts.find(e => e.l === 2 && e.e === 5).v[i]; }""")
    assert float(tip.get_attribute("data-value")) == want
    lines = tip.locator("div").all_inner_texts()
    assert lines[0] == "layer 2 · expert 5" and lines[1].startswith("das · legal = ")
    assert lines[2] == page.evaluate("() => window.moeReport.experts.find(e => e.l === 2 && e.e === 5).lab")
    page.mouse.click(x, y)
    page.wait_for_selector("#card-2-5.target")
    assert page.evaluate("() => { const r = document.getElementById('card-2-5').getBoundingClientRect();"
                         " return r.top >= 0 && r.top < window.innerHeight; }")
    assert page.problems == []


def test_a_sets_expert_link_and_an_eval_cell_link_land_on_the_card(browser_page, report_file):
    page = browser_page
    page.goto(report_file.resolve().as_uri())
    page.wait_for_selector("body[data-ready='1']")
    for table in ("table.sets", "table.eval td.masked"):
        link = page.locator(f"{table} a.eid").last
        layer, expert = link.get_attribute("href")[1:].split("/")
        link.click()
        target = page.locator(f"#card-{layer}-{expert}")
        target.wait_for()
        assert target.get_attribute("class") == "card target"
        assert page.evaluate(f"() => {{ const r = document.getElementById('card-{layer}-{expert}')"
                             ".getBoundingClientRect(); return r.top >= 0 && r.top < window.innerHeight; }")
        page.evaluate("() => window.scrollTo(0, 0)")
    assert page.problems == []


def test_the_health_panel_lists_a_planted_collapsed_layer(browser_page, tmp_path):
    from tests.score.test_health import collapsed_trace

    collapsed_trace(tmp_path / "t.msgpack.zst")
    out = tmp_path / "collapsed.html"
    build_report([tmp_path / "t.msgpack.zst"], out)
    page = browser_page
    page.goto(out.resolve().as_uri())
    page.wait_for_selector("body[data-ready='1']")
    assert page.locator("#health ul.flagged-layers li").all_inner_texts() == [
        "layer 2: collapsed (normalised load entropy 0.3333), 6 dead, 2 always-on"]
    assert page.locator("#health tr.flagged").get_attribute("data-layer") == "2"
    page.goto(out.resolve().as_uri() + "#2/6")
    page.wait_for_selector("#card-2-6.target")
    assert page.locator("#card-2-6 .badge.health").inner_text() == "⚠ dead, collapsed layer"
    assert page.locator("#card-0-6 .badge.health").count() == 0
    assert page.problems == []


def test_the_document_view_shows_a_documents_tokens_with_the_trace_s_experts(browser_page, report_file):
    from moetools.streams.files import read_input

    trace = report_file.parent / "trace.msgpack.zst"
    records = [r for r in read_input(str(trace), kinds="trace") if r.get("doc_id") == "doc1"]
    page = browser_page
    page.goto(report_file.resolve().as_uri())
    page.wait_for_selector("body[data-ready='1']")
    page.select_option("#doc", "1")                              # doc1, the second document of the trace
    page.select_option("#doc-layer", "1")                        # layer 2, the trace's second row
    tokens = page.locator("#doc-text .dtok")
    assert tokens.count() == sum(len(r["pieces"]) for r in records)
    shown = tokens.evaluate_all("nodes => nodes.map(n => [n.textContent, n.getAttribute('data-experts')])")
    want = [(piece, ",".join(str(int(e)) for e in record["experts"][1, t]))
            for record in records for t, piece in enumerate(record["pieces"])]
    assert [tuple(item) for item in shown] == want
    assert tokens.first.get_attribute("data-layer") == "2"
    # shaded by one expert's gate: only the tokens routed to it
    page.select_option("#doc-mode", "gate")
    page.fill("#doc-expert", "3")
    shaded = tokens.evaluate_all("nodes => nodes.filter(n => n.style.backgroundColor).map(n => n.getAttribute('data-experts'))")
    assert shaded and all("3" in ids.split(",") for ids in shaded)
    assert len(shaded) == sum(1 for _, ids in want if "3" in ids.split(","))
    tokens.nth(next(i for i, (_, ids) in enumerate(want) if "3" in ids.split(","))).click()
    page.wait_for_selector("#card-2-3.target")
    assert page.problems == []


def test_a_compare_page_shows_both_runs_and_the_difference_on_a_card(browser_page, tmp_path):
    import json

    from tests.report.test_compare import build_compare

    out = build_compare(tmp_path)
    trained = {(r["layer"], r["expert"]): r for r in map(json.loads, (tmp_path / "trained.scores.jsonl").read_text()
                                                         .splitlines()) if r.get("type") == "expert"}
    init = {(r["layer"], r["expert"]): r for r in map(json.loads, (tmp_path / "init.scores.jsonl").read_text()
                                                      .splitlines()) if r.get("type") == "expert"}
    page = browser_page
    page.goto(out.resolve().as_uri() + "#2/5")
    page.wait_for_selector("#card-2-5.target")
    row = page.locator("#card-2-5 table.grid tr:has(th:text-is('routed'))").locator("td").all_inner_texts()
    a, b = trained[(2, 5)]["domains"]["code"]["routed"], init[(2, 5)]["domains"]["code"]["routed"]
    delta = f"+{b - a}" if b > a else str(b - a)
    assert row[0] == f"{a} → {b} (Δ {delta})"
    assert page.locator("#card-2-5 .labelbox.compare-b .by").first.inner_text() == "random-init:"
    assert page.locator("#card-2-5 .rs").inner_text().startswith("routing change trained → random-init: shift ")
    # a map of the difference: its tooltip names both values
    map_id = page.locator("figure.map:has(.maphead b:text-is('af'))").get_attribute("id")
    page.select_option(f"#{map_id} select.run", "d")
    x, y = _cell_centre(page, map_id, 1, 5)
    page.mouse.move(x, y)
    value = page.locator("#map-tip .value").inner_text()
    af_a, af_b = trained[(2, 5)]["domains"]["code"]["af"], init[(2, 5)]["domains"]["code"]["af"]
    assert value.startswith("af · code = ") and "(Δ; trained " in value and "random-init " in value
    assert float(page.locator("#map-tip").get_attribute("data-value")) == pytest.approx(af_b - af_a, abs=1e-3)
    assert page.locator("#comparison #rc").inner_text().startswith("RC = ")
    assert page.problems == []


def test_a_large_page_decodes_the_card_data_of_a_chunk_when_one_of_its_cards_is_drawn(browser_page, tmp_path):
    from click.testing import CliRunner

    from moetools.cli import load_command
    from moetools.report.page import CHUNK, read_data_block
    from tests.trace_factory import make_records, write_trace

    trace, samples, out = tmp_path / "t.msgpack.zst", tmp_path / "s.msgpack.zst", tmp_path / "big.html"
    trace.write_bytes(write_trace(make_records(documents=4, tokens=120, num_experts=160), num_experts=160))
    result = CliRunner().invoke(load_command("moe-sample"), [str(trace), "--top", "2", "-o", str(samples), "-q"])
    assert result.exit_code == 0, result.output
    build_report([trace, samples], out, compress=True)
    text = out.read_text()
    assert text.count('class="moe-chunk"') == 2 == -(-320 // CHUNK)          # 320 experts: 2 chunks
    data = read_data_block(text)                                              # merged back for scripts
    late = next(x for x in data["experts"][CHUNK:] if x.get("c"))
    page = browser_page
    page.goto(out.resolve().as_uri())
    page.wait_for_selector("body[data-ready='1']")
    assert page.evaluate("() => window.moeReport.experts.filter(x => x.c).length") <= CHUNK   # chunk 2 not read
    page.evaluate(f"() => {{ location.hash = '{late['l']}/{late['e']}'; }}")
    card = page.locator(f"#card-{late['l']}-{late['e']}.target")
    card.wait_for()
    assert card.locator(".ctx").count() == len(late["c"]) + len(late.get("ho") or [])   # top contexts, holdout
    first = card.locator(".ctx").first.locator(".tok").all_inner_texts()
    assert first == late["c"][0]["p"]
    assert page.problems == []
