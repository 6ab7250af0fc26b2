"""Labels carry their evidence (formats/labels.md ``evidence``): counts, and an always-on or rare expert flagged in
the label record and on moe-report's card; the offline method names only tokens seen at least 3 times."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from moetools.cli import load_command
from moetools.explain.evidence import flag_of
from moetools.explain.offline import MIN_TOKEN_COUNT
from moetools.report.page import read_data_block
from tests.llm_stub import synthetic_expert
from tests.trace_factory import make_records, write_trace

ALWAYS_ON = 0          # the planted expert, in the trace's first MoE layer
MOE_LAYER = 0


def run(name: str, *args) -> str:
    result = CliRunner().invoke(load_command(name), [*map(str, args), "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def plant_always_on(records: list[dict]) -> list[dict]:
    """Route every token of the first MoE layer to expert ALWAYS_ON (as its second choice when not its first)."""
    for record in records:
        experts = record["experts"]                        # (L, T, K)
        missing = ~(experts[0] == ALWAYS_ON).any(axis=-1)
        experts[0, missing, 1] = ALWAYS_ON
    return records


def test_a_planted_always_on_expert_is_flagged_in_its_label_and_on_the_page(tmp_path):
    trace, samples, labels, page = (tmp_path / name for name in ("t.msgpack.zst", "s.msgpack.zst", "l.jsonl",
                                                                 "report.html"))
    trace.write_bytes(write_trace(plant_always_on(make_records(documents=8, tokens=150))))
    run("moe-sample", trace, "--top", "3", "--weighted", "1", "--negatives", "1", "-o", samples)
    run("moe-explain", samples, "--backend", "offline", "--no-cache", "-o", labels)
    records = [json.loads(line) for line in labels.read_text().splitlines()]
    by_key = {(r["layer"], r["expert"]): r for r in records if r["type"] == "label"}
    assert len(by_key) == 16 and all("evidence" in r for r in by_key.values())      # every label, failed ones too
    planted = by_key[(MOE_LAYER, ALWAYS_ON)]["evidence"]
    assert planted["flag"] == "always-on" and planted["firing_share"] == 1.0 and planted["uniform_share"] == 0.25
    assert planted["firing_tokens"] == planted["tokens_seen"] == 8 * 150
    assert planted["shown"] == len(by_key[(MOE_LAYER, ALWAYS_ON)]["examples"]) and planted["contexts"] >= 1
    others = [r["evidence"] for key, r in by_key.items() if key != (MOE_LAYER, ALWAYS_ON)]
    assert all(e["flag"] != "always-on" for e in others)       # the ordinary experts (~25% of tokens) are not
    assert all(0.1 < e["firing_share"] < 0.4 for e in others if e["tokens_seen"] == 1200)

    run("moe-report", labels, "-o", page)
    cards = {(e["l"], e["e"]): e for e in read_data_block(page.read_text(encoding="utf-8"))["experts"]}
    card = cards[(MOE_LAYER, ALWAYS_ON)]
    assert card["flag"] == "always-on" and card["ev"].startswith("rests on 1200 firing tokens of 1200 (100%)")
    assert card["ev"].endswith("; always-on")
    assert all(cards[key].get("flag") != "always-on" for key in cards if key != (MOE_LAYER, ALWAYS_ON))
    html = page.read_text(encoding="utf-8")
    assert '"[" + item.flag + "] "' in html and '"evidence: " + item.ev' in html   # drawn in the card's label line


def test_flag_thresholds():
    assert flag_of(950, 0.95, 40, None) == "always-on"                # >= 90% of all tokens
    assert flag_of(950, 0.95, 40, 0.5) == "always-on" and flag_of(890, 0.89, 40, 0.125) is None
    assert flag_of(1000, 1.0, 40, 1.0) is None                        # top-2 of 2: every expert sees every token
    assert flag_of(19, 0.019, 40, 0.25) == "rare" and flag_of(500, 0.5 * 0.25, 4, 0.25) == "rare"
    assert flag_of(20, 0.02, 5, 0.25) is None


def _samples_with(tmp_path, records: list[dict]) -> Path:
    from moetools.streams import StreamWriter

    model = {"name": "tiny", "model_type": "olmoe", "num_layers": 1, "num_experts": 4, "top_k": 1,
             "fingerprint": "sha256:" + "0" * 64}
    path = tmp_path / "s.msgpack.zst"
    with open(path, "wb") as handle:
        writer = StreamWriter(handle, "samples", tool={"name": "test"}, model=model)
        for record in records:
            writer.write(record)
        writer.close()
    return path


def test_offline_names_only_tokens_seen_at_least_three_times(tmp_path):
    """A fragment the expert fired on once ("opy") says nothing; one seen three times or more is named."""
    named, singletons = synthetic_expert(0, 0), synthetic_expert(0, 1)
    for record, fragment in ((named, "opy"), (singletons, None)):
        contexts = [c for name in ("top", "weighted") for c in record["explain"][name]]
        for number, context in enumerate(contexts):
            activation = np.asarray(context["activation"])
            for position in np.flatnonzero(activation > 0)[:1]:     # one activating token per context
                if fragment is not None and number == 0:
                    context["pieces"][position] = fragment           # seen once
                elif fragment is None:
                    context["pieces"][position] = f"frag{number}"    # every activating token a different one
            if fragment is None:
                for position in np.flatnonzero(activation > 0)[1:]:
                    context["pieces"][position] = f"other{number}"
    labels = tmp_path / "l.jsonl"
    result = CliRunner().invoke(load_command("moe-explain"), [str(_samples_with(tmp_path, [named, singletons])),
                                                              "--backend", "offline", "--no-cache", "-o", str(labels)])
    assert result.exit_code == 0, result.output
    records = {r["expert"]: r for r in map(json.loads, labels.read_text().splitlines()) if r["type"] == "label"}
    tokens = records[0]["details"]["tokens"]
    assert tokens and all(row["count"] >= MIN_TOKEN_COUNT for row in tokens) and '"opy"' not in records[0]["explanation"]
    assert records[0]["details"]["min_count"] == MIN_TOKEN_COUNT
    assert records[1]["status"] == "failed" and f"at least {MIN_TOKEN_COUNT} times" in records[1]["error"]
    assert records[1]["evidence"]["activating_positions"] == 12        # the evidence is there, the label is not


def test_the_always_on_flag_is_drawn_in_the_cards_label_line_in_a_browser(tmp_path):
    """The rendered page (Debian's Chromium through Playwright, as tests/report/test_browser.py; skipped without)."""
    import pytest

    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.skip("no /usr/bin/chromium (see tests/report/test_browser.py)")
    trace, samples, labels, page_file = (tmp_path / name for name in ("t.msgpack.zst", "s.msgpack.zst", "l.jsonl",
                                                                      "report.html"))
    trace.write_bytes(write_trace(plant_always_on(make_records(documents=8, tokens=150))))
    run("moe-sample", trace, "--top", "3", "--weighted", "1", "--negatives", "1", "-o", samples)
    run("moe-explain", samples, "--backend", "offline", "--no-cache", "-o", labels)
    run("moe-report", labels, "-o", page_file)                # built before the browser's event loop starts
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), headless=True,
                                             args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.goto(page_file.as_uri())
        planted = page.locator(f"#card-{MOE_LAYER}-{ALWAYS_ON}")
        assert planted.locator(".label").first.inner_text().startswith("[always-on] ")
        assert planted.locator(".evidence").first.inner_text().endswith("; always-on")
        ordinary = page.locator(f"#card-{MOE_LAYER}-{ALWAYS_ON + 1}")
        assert not ordinary.locator(".label").first.inner_text().startswith("[always-on]")
        browser.close()
