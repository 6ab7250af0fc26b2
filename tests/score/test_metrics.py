"""moe-score's routing metrics against brute-force computations on a hand-written JSON-lines trace.

The trace is written here as JSON text (not by our writer), with dyadic values that float32
holds exactly; every metric is recomputed token by token from the same table with plain loops,
following the paper's equation, and compared to 1e-6.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from moetools.cli.score import command as moe_score
from moetools.score import metrics as M

LAYERS, E, K = [0, 3], 3, 2
MODEL = {"name": "hand", "path": None, "model_type": "olmoe", "num_layers": 4, "moe_layers": LAYERS,
         "num_experts": E, "top_k": K, "fingerprint": "sha256:" + "0f" * 32}

# token = per layer (expert a, expert b, gate a, gate b, norm a, norm b, p0, p1, p2); probabilities in 16ths
T = [
    [(0, 1, 8, 4, 4, 2, 8, 5, 3), (2, 0, 10, 2, 1, 6, 3, 3, 10)],
    [(1, 2, 6, 6, 3, 5, 2, 9, 5), (0, 1, 9, 3, 2, 2, 12, 2, 2)],
    [(0, 2, 12, 1, 8, 1, 11, 1, 4), (1, 2, 7, 5, 5, 3, 1, 8, 7)],
    [(2, 1, 9, 3, 2, 7, 2, 4, 10), (2, 1, 8, 8, 6, 1, 4, 4, 8)],
    [(1, 0, 5, 5, 1, 1, 6, 7, 3), (0, 2, 11, 1, 3, 9, 9, 1, 6)],
    [(0, 1, 14, 2, 5, 4, 13, 2, 1), (1, 0, 4, 4, 7, 2, 5, 6, 5)],
    [(2, 0, 6, 2, 2, 2, 4, 4, 8), (0, 1, 8, 4, 1, 1, 8, 4, 4)],
    [(1, 2, 7, 7, 3, 3, 3, 10, 3), (2, 0, 9, 3, 4, 4, 2, 2, 12)],
]
# sequences: (doc_id, window, domain or None, toxicity, token indices)
SEQUENCES = [("a1", 0, "A", 0.0, [0, 1]), ("a2", 0, "A", 1.0, [2]), ("b1", 0, "B", 0.5, [3, 4]),
             ("a2", 1, "A", 1.0, [5]), ("b2", 0, "B", 0.25, [6]), ("x1", 0, None, 0.75, [7])]


def gate(v):
    return v / 16


def token_probs(token, li):
    return [gate(x) for x in T[token][li][6:9]]


def selected(token, li):
    a, b, ga, gb, na, nb = T[token][li][:6]
    return {a: (gate(ga), na / 4), b: (gate(gb), nb / 4)}   # expert -> (gate, ||E||)


def array(nd, shape, values):
    return {"nd": nd, "shape": shape, "values": values}


def trace_text(probs_of=token_probs, fingerprint=MODEL["fingerprint"], sequences=SEQUENCES) -> str:
    header = {"type": "header", "format": "moetools", "version": 1, "kind": "trace",
              "tool": {"name": "hand-written", "version": "1", "args": {}},
              "model": dict(MODEL, fingerprint=fingerprint), "layers": LAYERS, "num_experts": E, "top_k": K,
              "max_length": 2}
    lines = [json.dumps(header)]
    for doc, window, domain, tox, tokens in sequences:
        meta = {"toxicity": tox} if domain is None else {"domain": domain, "toxicity": tox}
        experts, gates, contrib, prob_sum = [], [], [], []
        for li in range(len(LAYERS)):
            experts.append([[T[t][li][0], T[t][li][1]] for t in tokens])
            gates.append([[gate(T[t][li][2]), gate(T[t][li][3])] for t in tokens])
            contrib.append([[gate(T[t][li][2]) * T[t][li][4] / 4, gate(T[t][li][3]) * T[t][li][5] / 4]
                            for t in tokens])
            prob_sum.append([sum(probs_of(t, li)[e] for t in tokens) for e in range(E)])
        n = len(tokens)
        lines.append(json.dumps({
            "type": "sequence", "doc_id": doc, "window": window, "offset": 2 * window, "meta": meta,
            "tokens": array("<i4", [n], [7] * n), "pieces": ["x"] * n,
            "experts": array("|u1", [2, n, 2], experts), "gates": array("<f4", [2, n, 2], gates),
            "contribution": array("<f4", [2, n, 2], contrib), "prob_sum": array("<f4", [2, E], prob_sum)}))
    lines.append(json.dumps({"type": "end", "count": len(sequences)}))
    return "\n".join(lines) + "\n"


def tokens_of(domain=None, exclude=None):
    for doc, _, d, _, tokens in SEQUENCES:
        if d is None:
            continue
        if (domain is None or d == domain) and d != exclude:
            yield from tokens


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hand")
    (folder / "trace.jsonl").write_text(trace_text())
    from click.testing import CliRunner

    result = CliRunner().invoke(moe_score, [str(folder / "trace.jsonl"), "--target-field", "toxicity",
                                            "--permutations", "100", "--cdas-k", "1", "--cdas-k", "2"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    records = {(r["layer"], r["expert"]): r for r in lines if r["type"] == "expert"}
    return lines[0], records, lines[-1], folder


def brute(domain, li, e):
    toks = list(tokens_of(domain))
    routed = [t for t in toks if e in selected(t, li)]
    g = [selected(t, li)[e][0] for t in routed]
    n = [selected(t, li)[e][1] for t in routed]
    out = {"af": len(routed) / len(toks), "prob": sum(token_probs(t, li)[e] for t in toks) / len(toks),
           "score": sum(g) / len(toks), "explen": sum(n) / len(routed) if routed else None,
           "psn": sum(a * b for a, b in zip(g, n)) / len(toks),
           "reap": sum(a * b for a, b in zip(g, n)) / len(routed) if routed else None, "routed": len(routed)}
    rest = list(tokens_of(exclude=domain))
    out["das"] = out["prob"] - sum(token_probs(t, li)[e] for t in rest) / len(rest)
    all_sel = sum(len(selected(t, li)) for t in toks)
    out["esft_token"] = len(routed) / all_sel
    out["esft_gate"] = sum(g) / len(toks)                # ESFT: gate sum / tokens, not normalised
    return out


def close(a, b):
    return (a is None and b is None) or abs(a - b) < 1e-6


@pytest.mark.parametrize("metric", ["af", "prob", "das", "score", "explen", "psn", "reap", "esft_token",
                                    "esft_gate", "routed"])
def test_per_domain_metric_matches_brute_force(scored, metric):
    _, records, _, _ = scored
    for (layer, e), record in records.items():
        li = LAYERS.index(layer)
        for domain in ("A", "B"):
            want = brute(domain, li, e)[metric]
            assert close(record["domains"][domain][metric], want), (layer, e, domain, metric)


def test_header_and_accounting(scored):
    header, records, end, _ = scored
    assert header["kind"] == "scores" and header["layers"] == LAYERS and header["domains"] == ["A", "B"]
    assert header["model"]["fingerprint"] == MODEL["fingerprint"] and len(records) == 2 * E
    summary = end["summary"]
    assert summary["tokens"] == {"A": 4, "B": 3}
    assert summary["missing_domain"] == {"documents": 1, "sequences": 1, "tokens": 1}
    assert summary["documents"] == 5  # a2's two windows are one document; x1 (no domain) counts for Pearson


def test_cdas_matches_equation_2(scored):
    _, records, end, _ = scored
    for domain in ("A", "B"):
        for k in (1, 2):
            total = 0.0
            for layer in LAYERS:
                das = sorted((records[(layer, e)]["domains"][domain]["das"] for e in range(E)), reverse=True)
                positive = sum(max(x, 0) for x in das)
                value = sum(max(x, 0) for x in das[:k]) / positive if positive else 0.0
                assert close(end["summary"]["cdas"][domain][str(k)]["per_layer"][str(layer)], value)
                total += value
            assert close(end["summary"]["cdas"][domain][str(k)]["total"], total)


def doc_table():
    docs = {}
    for doc, _, domain, tox, tokens in SEQUENCES:
        if domain is None:
            continue
        entry = docs.setdefault(doc, {"domain": domain, "tox": tox, "tokens": []})
        entry["tokens"] += tokens
    return docs


def ratio_for(docs, labels, li, e):
    means = {}
    for domain in set(labels):
        toks = [t for (name, entry), lab in zip(docs.items(), labels) if lab == domain for t in entry["tokens"]]
        means[domain] = sum(token_probs(t, li)[e] for t in toks) / len(toks)
    top, second = sorted(means.values(), reverse=True)[:2]
    return top / second


def test_skew_and_exact_permutation_p_value_by_enumeration(scored):
    _, records, end, _ = scored
    docs = doc_table()
    observed_labels = [entry["domain"] for entry in docs.values()]
    arrangements = set(itertools.permutations(observed_labels))
    assert len(arrangements) == 6 and end["summary"]["skew"]["exact"] is True
    ps = {}
    for layer in LAYERS:
        li = LAYERS.index(layer)
        for e in range(E):
            skew = records[(layer, e)]["skew"]
            observed = ratio_for(docs, observed_labels, li, e)
            means = {d: brute(d, li, e)["prob"] for d in ("A", "B")}
            assert skew["domain"] == max(means, key=means.get)
            assert close(skew["ratio"], observed)
            assert skew["specialised"] == (observed >= 2)
            hits = sum(ratio_for(docs, list(a), li, e) >= observed - 1e-12 for a in arrangements)
            assert close(skew["p"], hits / len(arrangements))
            ps[(layer, e)] = skew["p"]
    # BH q-values over all experts, brute force: q_i = min_{j: p_j >= p_i} p_j * m / rank_j
    m = len(ps)
    ordered = sorted(ps.values())
    for key, p in ps.items():
        q = min(min(1.0, pj * m / (ordered.index(pj) + 1 + ordered.count(pj) - 1)) for pj in ordered if pj >= p)
        assert close(records[key]["skew"]["q"], q)
    expected = end["summary"]["skew"]["expected_under_null"]
    for layer in LAYERS:
        li = LAYERS.index(layer)
        count = sum(ratio_for(docs, list(a), li, e) >= 2 for a in arrangements for e in range(E))
        assert close(expected[str(layer)], count / len(arrangements))


def test_monte_carlo_permutation_p_value_is_seeded_and_bounded():
    rng = np.random.default_rng(1)
    mass = rng.random((12, 2, 5))
    labels = np.repeat([0, 1, 2], 4)
    first = M_perm(mass, labels, 50, 7)
    assert not first.exact and first.permutations == 50
    np.testing.assert_array_equal(first.p, M_perm(mass, labels, 50, 7).p)
    assert np.all((first.p >= 1 / 51) & (first.p <= 1))


def M_perm(mass, labels, permutations, seed):
    from moetools.score.permutation import skew_permutation_test

    return skew_permutation_test(mass, np.full(len(labels), 3.0), labels, permutations=permutations, seed=seed)


def test_pearson_across_documents(scored):
    _, records, end, _ = scored
    docs = {}
    for doc, _, _, tox, tokens in SEQUENCES:                   # every document, with or without a domain
        docs.setdefault(doc, (tox, []))[1].extend(tokens)
    y = [tox for tox, _ in docs.values()]
    for layer in LAYERS:
        li = LAYERS.index(layer)
        for e in range(E):
            x = [sum(token_probs(t, li)[e] for t in toks) / len(toks) for _, toks in docs.values()]
            assert close(records[(layer, e)]["pearson"], float(np.corrcoef(x, y)[0, 1]))
    assert end["summary"]["pearson"] == {"field": "toxicity", "documents": 5, "without_value": 0}


def test_routing_consistency_between_two_traces(scored, run_tool):
    _, _, _, folder = scored
    (folder / "before.jsonl").write_text(trace_text(probs_of=lambda t, li: token_probs(t, li)[::-1],
                                                    fingerprint="sha256:" + "1e" * 32))
    result = run_tool(moe_score, [str(folder / "trace.jsonl"), "--rc-against", str(folder / "before.jsonl"),
                                  "--metrics", "rc_shift,af"])
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    toks = list(tokens_of())
    shifts = []
    for record in (r for r in lines if r["type"] == "expert"):
        li, e = LAYERS.index(record["layer"]), record["expert"]
        after = sum(token_probs(t, li)[e] for t in toks) / len(toks)
        before = sum(token_probs(t, li)[::-1][e] for t in toks) / len(toks)
        assert close(record["rc_shift"], (after - before) ** 2)          # 003 eq. 4
        assert "das" not in record["domains"]["A"] and "skew" not in record
        shifts.append((after - before) ** 2)
    assert close(lines[-1]["summary"]["rc"], sum(shifts) / len(shifts))  # 003 eq. 5


def test_general_as_a_named_domain_and_as_a_trace(scored, run_tool):
    folder = scored[3]
    result = run_tool(moe_score, [str(folder / "trace.jsonl"), "--general", "B", "--permutations", "0"])
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    for record in (r for r in lines if r["type"] == "expert"):
        li, e = LAYERS.index(record["layer"]), record["expert"]
        assert close(record["domains"]["A"]["das"], brute("A", li, e)["prob"] - brute("B", li, e)["prob"])
        assert close(record["domains"]["B"]["das"], 0.0)
    # a general trace: B's documents only, as their own file
    (folder / "general.jsonl").write_text(trace_text(sequences=[s for s in SEQUENCES if s[2] == "B"]))
    (folder / "a-only.jsonl").write_text(trace_text(sequences=[s for s in SEQUENCES if s[2] == "A"]))
    result = run_tool(moe_score, [str(folder / "a-only.jsonl"), "--general", str(folder / "general.jsonl")])
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert lines[0]["general"] == {"kind": "trace"} and lines[0]["domains"] == ["A"]
    for record in (r for r in lines if r["type"] == "expert"):
        li, e = LAYERS.index(record["layer"]), record["expert"]
        assert close(record["domains"]["A"]["das"], brute("A", li, e)["prob"] - brute("B", li, e)["prob"])
        assert close(record["general"]["af"], brute("B", li, e)["af"])


def test_metric_functions_on_edge_cases():
    assert math.isnan(M.activation_frequency(np.ones((1, 2)), 0)[0, 0])
    per_layer, total = M.cumulative_das(np.array([[-1.0, -2.0], [0.5, 0.5]]), 1)
    assert list(per_layer) == [0.0, 0.5] and total == 0.5
    _, ratio = M.skew(np.array([[[0.0, 0.2]], [[0.0, 0.0]]]))
    assert math.isnan(ratio[0, 0]) and math.isinf(ratio[0, 1])
    q = M.benjamini_hochberg(np.array([0.01, 0.04, 0.03, np.nan]))
    np.testing.assert_allclose(q[:3], [0.03, 0.04, 0.04])
    assert math.isnan(q[3])


# -- JSD specialisation over unembedding clusters (paper 002) ------------------------------------------

def test_jsd_in_bits_against_the_definition():
    from moetools.score.jsd import jsd_bits

    p, q = np.array([0.5, 0.5, 0.0]), np.array([0.1, 0.2, 0.7])
    m = (p + q) / 2
    kl = lambda a, b: sum(x * math.log2(x / y) for x, y in zip(a, b) if x > 0)
    assert close(float(jsd_bits(p, q)), 0.5 * kl(p, m) + 0.5 * kl(q, m))
    assert close(float(jsd_bits(np.array([1.0, 0]), np.array([0, 1.0]))), 1.0)   # disjoint: 1 bit
    assert close(float(jsd_bits(p * 4, p)), 0.0)                                 # counts or shares alike


def test_spherical_kmeans_recovers_separated_directions():
    from moetools.score.jsd import spherical_kmeans

    rng = np.random.default_rng(0)
    directions = np.eye(8)[:4] * 5
    rows = np.concatenate([d + rng.normal(0, 0.3, size=(50, 8)) for d in directions])
    labels = spherical_kmeans(rows, 4, seed=1)
    groups = [set(labels[i * 50:(i + 1) * 50]) for i in range(4)]
    assert all(len(g) == 1 for g in groups) and len(set().union(*groups)) == 4


def test_pearson_needs_no_domain(scored, run_tool):
    folder = scored[3]
    result = run_tool(moe_score, [str(folder / "trace.jsonl"), "--domain-field", "nope", "--target-field",
                                  "toxicity"])
    assert result.exit_code == 0, result.stderr
    assert "per-domain metrics not computed" in result.stderr
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    docs = {}
    for doc, _, _, tox, tokens in SEQUENCES:                   # every document, x1 included
        docs.setdefault(doc, (tox, []))[1].extend(tokens)
    y = [tox for tox, _ in docs.values()]
    for record in (r for r in lines if r["type"] == "expert"):
        li, e = LAYERS.index(record["layer"]), record["expert"]
        x = [sum(token_probs(t, li)[e] for t in toks) / len(toks) for _, toks in docs.values()]
        assert record["domains"] == {} and close(record["pearson"], float(np.corrcoef(x, y)[0, 1]))


def test_default_domain_scores_documents_without_the_field(scored, run_tool):
    folder = scored[3]
    result = run_tool(moe_score, [str(folder / "trace.jsonl"), "--default-domain", "rest", "--permutations", "0"])
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert lines[0]["domains"] == ["A", "B", "rest"]
    assert lines[-1]["summary"]["tokens"] == {"A": 4, "B": 3, "rest": 1}
    assert lines[-1]["summary"]["missing_domain"]["documents"] == 0
    record = next(r for r in lines if r["type"] == "expert" and r["layer"] == 0 and r["expert"] == 2)
    assert close(record["domains"]["rest"]["af"], float(2 in selected(7, 0)))
