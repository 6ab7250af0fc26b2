"""moe-report's size and speed per expert, up to a MONET-sized model (4 layers x 4,096 composed experts).

Writes synthetic but schema-valid streams of one model, each expert as full as moe-report ever makes
it (scores: 6 domains x 10 metrics + skew + Pearson, and judged scores with the scorer's verdicts on
10 + 10 holdout samples over 2 repeats; two labels, an LLM's and the offline one; 4 top contexts and
2 + 2 holdout examples of 48 tokens; 8 logit-lens tokens), builds the report, and measures bytes per
expert, build time and peak RSS; then opens the largest report in headless Chromium (when
/usr/bin/chromium and Playwright are there) and times it until the first page of cards is drawn.
Each size is built twice, side by side: without the judged scores and the second label (the report as
it was before verdicts) and with them.

    .venv/bin/python bench/bench_report.py [--quick] [-o bench/results/report.json]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from _harness import measure, parser, write_result

from moetools.report import build_report
from moetools.streams import StreamWriter

DOMAINS = ["code", "legal", "medical", "math", "general", "offensive"]
METRICS = ["af", "prob", "das", "score", "explen", "psn", "reap", "esft_token", "esft_gate", "routed"]
CONTEXT = 48


def model(layers: int, experts: int) -> dict:
    return {"name": f"bench-{layers}x{experts}", "path": None, "model_type": "monet", "num_layers": layers,
            "moe_layers": list(range(layers)), "num_experts": experts, "top_k": 8, "fingerprint": "sha256:" + "d4" * 32}


def context(rng, key: str, positive: bool) -> dict:
    pieces = [f" w{int(i)}" for i in rng.integers(0, 5000, CONTEXT)]
    activation = (rng.random(CONTEXT) * (rng.random(CONTEXT) < 0.3) * positive).astype("<f4")
    mark = int(rng.integers(0, CONTEXT))
    if positive:
        activation[mark] = 1.0 + float(rng.random())
    return {"id": key, "doc_id": key, "offset": 0, "mark": mark, "pieces": pieces,
            "activation": activation, "score": float(activation.max()), "meta": {"domain": str(rng.choice(DOMAINS))}}


def judged(rng, key: str) -> dict:
    """The judged fields of one expert (formats/scores.md): EMS & co. and 10 + 10 verdicts over 2 repeats."""
    verdicts = [{"holdout": side, "index": i, "id": f"{key}-{side[0]}{i}", "y": int(side == "positive"),
                 "yhat": [int(x) for x in rng.random(2) < 0.5]} for side in ("positive", "negative") for i in range(10)]
    return {"ems": float(rng.random()), "ems_shuffled": float(rng.random()), "f1": float(rng.random()),
            "judged": {"mono": {"scorer": "llm", "status": "ok", "positives": 10, "negatives": 10, "repeats": 2,
                                "answered": 2, "requests": 4, "cache_hits": 0, "attempts": 2, "shuffled_from": 0,
                                "explainer": {"backend": "local", "model": "SmolLM2-360M-Instruct"},
                                "verdicts": verdicts}}}


def write_streams(directory: Path, layers: int, experts: int, verdicts: bool = True) -> list[Path]:
    rng = np.random.default_rng(0)
    identity = model(layers, experts)
    paths = [directory / "scores.msgpack.zst", directory / "labels.msgpack.zst", directory / "samples.msgpack.zst"]
    header = {"source": "routing", "layers": list(range(layers)), "num_experts": experts, "top_k": 8,
              "domains": DOMAINS}
    if verdicts:
        header["scorer"] = {"kind": "llm", "backend": "local", "model": "SmolLM2-360M-Instruct",
                            "prompt": "paper 000 appendix A.2"}
    with open(paths[0], "wb") as handle:
        writer = StreamWriter(handle, "scores", tool={"name": "bench"}, model=identity, header_extra=header)
        for layer in range(layers):
            for expert in range(experts):
                values = rng.random((len(DOMAINS), len(METRICS)))
                writer.write({"type": "expert", "layer": layer, "expert": expert,
                              "domains": {d: {m: float(values[i, j]) for j, m in enumerate(METRICS)}
                                          for i, d in enumerate(DOMAINS)},
                              "skew": {"domain": DOMAINS[0], "ratio": float(1 + 3 * rng.random()),
                                       "specialised": bool(rng.random() < 0.2), "p": float(rng.random()),
                                       "q": float(rng.random())},
                              "pearson": float(rng.random() - 0.5),
                              **(judged(rng, f"d{layer}-{expert}") if verdicts else {})})
        writer.close()
    with open(paths[1], "wb") as handle:
        writer = StreamWriter(handle, "labels", tool={"name": "bench"}, model=identity)
        for layer in range(layers):
            for expert in range(experts):
                writer.write({"type": "label", "layer": layer, "expert": expert, "status": "ok",
                              "explanation": f"This expert specializes in the tokens \"w{expert}\", \"w{layer}\" "
                                             "in medical text and promotes \" dose\"",
                              "explainer": {"backend": "offline", "model": None, "method": "offline-log-odds-v3"}})
        writer.close()
    if verdicts:   # a second labels stream: an LLM's label for every expert (the worst case)
        paths.append(directory / "llm.labels.msgpack.zst")
        with open(paths[3], "wb") as handle:
            writer = StreamWriter(handle, "labels", tool={"name": "bench"}, model=identity)
            for layer in range(layers):
                for expert in range(experts):
                    writer.write({"type": "label", "layer": layer, "expert": expert, "status": "ok",
                                  "explanation": f"This expert specializes in dosage units after numbers ({expert})",
                                  "explainer": {"backend": "local", "model": "SmolLM2-360M-Instruct",
                                                "method": "chat"}})
            writer.close()
    with open(paths[2], "wb") as handle:
        writer = StreamWriter(handle, "samples", tool={"name": "bench"}, model=identity,
                              header_extra={"layers": list(range(layers)), "num_experts": experts})
        for layer in range(layers):
            for expert in range(experts):
                key = f"d{layer}-{expert}"
                writer.write({"type": "expert", "layer": layer, "expert": expert, "status": "ok",
                              "explain": {"top": [context(rng, f"{key}-{i}", True) for i in range(4)]},
                              "holdout": {"positive": [context(rng, f"{key}-p{i}", True) for i in range(10)],
                                          "negative": [context(rng, f"{key}-n{i}", False) for i in range(10)]},
                              "logit_lens": [{"id": i, "piece": f" v{i}", "count": 9 - i} for i in range(8)]})
        writer.close()
    return paths


def open_in_chromium(report: Path) -> dict | None:
    """Seconds from navigation to the first page of cards (and the maps) drawn, the first contentful paint, the
    page's JS heap once drawn, and its maps; None without Chromium/Playwright."""
    if not Path("/usr/bin/chromium").exists():
        return None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
        context = playwright.chromium.launch_persistent_context(profile, executable_path="/usr/bin/chromium",
                                                                args=args, headless=True)
        page = context.new_page()
        started = time.perf_counter()
        page.goto(report.resolve().as_uri(), timeout=120_000)
        page.wait_for_selector("body[data-ready='1']", timeout=120_000)
        seconds = time.perf_counter() - started
        assert page.locator(".card").count() == 50
        paint = page.evaluate("() => (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime")
        heap = page.evaluate("() => performance.memory ? performance.memory.usedJSHeapSize : null")
        maps = page.locator("figure.map canvas").count()
        context.close()
    return {"ready_seconds": round(seconds, 2), "first_contentful_paint_seconds": paint and round(paint / 1000, 3),
            "js_heap_mb": heap and round(heap / 2**20, 1), "maps": maps, "file_mb": round(report.stat().st_size / 2**20, 1)}


def build_one(tmp: str, layers: int, experts: int, verdicts: bool) -> tuple[dict, Path]:
    directory = Path(tmp) / f"{layers}x{experts}-{'with' if verdicts else 'without'}"
    directory.mkdir()
    inputs = write_streams(directory, layers, experts, verdicts=verdicts)
    report = directory / "report.html"
    started = time.perf_counter()
    written = build_report(inputs, report)
    seconds = time.perf_counter() - started
    count = layers * experts
    print(f"{count:>6} experts, {'with' if verdicts else 'without'} verdicts: {written['bytes'] / 1e6:6.1f} MB, "
          f"{written['bytes'] / count:,.0f} B/expert, built in {seconds:.1f} s", flush=True)
    return {"layers": layers, "experts_per_layer": experts, "experts": count, "verdicts": verdicts,
            "bytes": written["bytes"], "bytes_per_expert": round(written["bytes"] / count),
            "build_seconds": round(seconds, 2), "build_ms_per_expert": round(1000 * seconds / count, 3),
            "input_bytes": sum(path.stat().st_size for path in inputs)}, report


def main() -> None:
    args = parser(__doc__, "report").parse_args()  # --quick: only the small sizes
    sizes = [(2, 64), (4, 1024)] + ([] if args.quick else [(4, 4096)])
    runs, added = [], []
    with measure() as cost, tempfile.TemporaryDirectory() as tmp:
        for layers, experts in sizes:   # side by side: the same model without and with verdicts + a second label
            before, _ = build_one(tmp, layers, experts, verdicts=False)
            after, report = build_one(tmp, layers, experts, verdicts=True)
            runs += [before, after]
            added.append({"experts": before["experts"], "bytes_per_expert_without": before["bytes_per_expert"],
                          "bytes_per_expert_with": after["bytes_per_expert"],
                          "added_bytes_per_expert": after["bytes_per_expert"] - before["bytes_per_expert"]})
        browser = open_in_chromium(report)
    browser_seconds = browser and browser["ready_seconds"]
    if browser is not None:
        print(f"largest report ({runs[-1]['experts']} experts, with verdicts, {browser['file_mb']} MB) first painted "
              f"in {browser['first_contentful_paint_seconds']} s, drew its first 50 cards and {browser['maps']} maps "
              f"in {browser_seconds:.1f} s, JS heap {browser['js_heap_mb']} MB (headless Chromium)")
    results = {"per_expert": "scores (6 domains x 10 metrics, skew, Pearson), a label, 4 top contexts + 2+2 holdout "
                             f"examples of {CONTEXT} tokens, 8 logit-lens tokens; with verdicts also judged "
                             "EMS/F1 with 10+10 verdicts over 2 repeats and a second (LLM) label",
               "runs": runs, "verdicts_side_by_side": added, "largest_opened_in_chromium_seconds": browser_seconds,
               "largest_opened_in_chromium": browser,
               "peak_rss_mb": cost["peak_rss_mb"], "whole_run": cost}
    write_result(args, results)


if __name__ == "__main__":
    main()
