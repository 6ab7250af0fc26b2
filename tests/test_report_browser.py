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
from report_fixture import build_inputs

from moetools.report import build_report

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
    assert page.locator("#overview svg").count() >= 4           # heatmaps and bar charts rendered
    assert page.locator("#overview svg image").count() >= 2     # the heatmaps' images decoded in place
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
