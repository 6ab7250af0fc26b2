"""One streaming pass over a trace -> per (layer, expert) example sets (formats/samples.md).

Paper 000 §3.1 builds each expert's activation dataset in three stages:
top-activated samples, importance-weighted samples and random negatives. Paper
002 ranks by the residual-stream contribution ``score(s, E_i) = max_{x∈s}
g_i(x)·‖E_i(x)‖₂`` and shows the explainer the top-20 sequences, scoring on 10
positive + 10 negative held-out ones. Here, for every (layer, expert):

==================  ====================================================================  =========
set                 what                                                                  default
==================  ====================================================================  =========
explain.top         the contexts with the largest ``max`` activation (exact top-N)        20
explain.weighted    contexts drawn with probability ∝ max activation (A-Res), not in top  20
explain.negative    contexts whose marked token does not route to the expert              20
holdout.positive    like weighted, from the holdout regions only                          10
holdout.negative    like negative, from the holdout regions only                          10
==================  ====================================================================  =========

The split: every region of ``split_region`` tokens of a document (0: the whole
document) is holdout with probability ``holdout_fraction``, by a hash of (seed,
document, region); explain sets draw only from explain regions and holdout sets
only from holdout regions, so the two never share a context, nor overlapping or
even the same stretch of text.

Negatives are token-level (experts fire densely: a top-8-of-64 expert fires on
~12 % of tokens, so nearly every 32-token window holds a firing): a negative is a
(cell, marked token) where the expert is not selected at the marked token (and,
with ``negative_span`` S > 1, on none of the S tokens ending there). Cells are
drawn with weight = their number of eligible tokens and the mark uniformly among
them, so every eligible token is equally likely. Hard negatives: ``domain``
keeps negatives per domain and matches the domain mix of the positives they go
with; ``token`` only marks tokens that route to the expert elsewhere in the
same trace window.

Memory: heaps of (layers x experts x set size) contexts, plus one record; no
state grows with the trace. All randomness is keyed by content
(:mod:`moetools.sample.reservoir`), so shard order never changes the result.
"""

from __future__ import annotations

import numpy as np

from ..errors import FormatError, UsageError
from ..streams.schema import schema_for
from .contexts import Example, Grid, negative_span_ok, token_matched
from .options import DENSE_BUDGET, RANK_FIELDS, SampleOptions, domain_key
from .reservoir import (
    PURPOSE_MARK,
    PURPOSE_NEGATIVE,
    PURPOSE_SPLIT,
    PURPOSE_WEIGHTED,
    HeapBank,
    content_hash,
    document_key,
    to_uniform,
    weighted_log_key,
)


class Sampler:
    """Feed it sequence records (:meth:`feed`), then take the expert records (:meth:`results`).

    The header and every record are checked by the trace stream's schema
    (:mod:`moetools.streams.schemas.trace`, formats/trace.md), the one check every
    consumer shares; ``checked=True`` skips the per-record check when the records come
    from a ``StreamReader(validate=True)``, which ran it already.
    """

    def __init__(self, header: dict, options: SampleOptions, *, checked: bool = False):
        options.check()
        self.options = options
        self.schema = schema_for("trace")
        self.schema.check_header(header)
        self.header, self.checked = header, checked
        self.layers, self.num_experts, self.top_k = header["layers"], header["num_experts"], header["top_k"]
        if options.layers is not None:
            unknown = sorted(set(options.layers) - set(self.layers))
            if unknown:
                raise UsageError(f"--layers {unknown} are not MoE layers of this trace (it has {self.layers})")
        self.rows = [i for i, layer in enumerate(self.layers) if options.layers is None or layer in options.layers]
        self.row_layers = np.asarray([self.layers[i] for i in self.rows], dtype=np.int64)
        if options.experts is not None:
            unknown = sorted(e for e in set(options.experts) if not 0 <= e < self.num_experts)
            if unknown:
                raise UsageError(f"--experts {unknown} out of range (the trace has {self.num_experts} per layer)")
        self.expert_ids = sorted(set(options.experts)) if options.experts is not None \
            else list(range(self.num_experts))
        self.expert_mask = np.zeros(self.num_experts, dtype=bool)
        self.expert_mask[self.expert_ids] = True
        rows, experts = len(self.rows), self.num_experts
        self.rank_field = RANK_FIELDS[options.rank]
        self.top = HeapBank(rows, experts, options.top)
        # weighted keeps top-N extra: the top contexts are removed from it at the end (no duplicates)
        self.weighted = HeapBank(rows, experts, options.weighted + options.top)
        self.holdout_positive = HeapBank(rows, experts, options.holdout_positive)
        self.negative: dict = {}           # domain (None unless matching by domain) -> HeapBank
        self.holdout_negative: dict = {}
        self.firing = np.zeros((rows, experts), dtype=np.int64)
        self.max_activation = np.zeros((rows, experts), dtype=np.float64)
        self.positive_cells = np.zeros((2, rows, experts), dtype=np.int64)  # [explain, holdout]
        self.negative_cells = np.zeros((2, rows, experts), dtype=np.int64)
        self.sequences = 0
        self._pieces: dict = {}
        self.tokens = 0
        self.skipped_domain = 0
        self.other_records = 0

    # -- the pass --------------------------------------------------------------------------------
    def _bank(self, banks: dict, domain, capacity: int) -> HeapBank:
        key = domain_key(domain) if self.options.hard_negatives == "domain" else None
        bank = banks.get(key)
        if bank is None:
            bank = banks[key] = HeapBank(len(self.rows), self.num_experts, capacity)
        return bank

    def _arrays(self, record: dict, number: int):
        """The fields moe-sample uses, once the record passed the trace schema (formats/trace.md)."""
        if not self.checked:
            self.schema.check_record(record, self.header, number)
        return record["experts"], record[self.rank_field], record["pieces"], int(record["offset"])

    def feed(self, record: dict, number: int = 0) -> None:
        """Take one record of the trace (records of other types are counted and ignored)."""
        if record.get("type") != "sequence":
            self.other_records += 1
            return
        experts, values, pieces, offset = self._arrays(record, number)
        meta = record.get("meta") if isinstance(record.get("meta"), dict) else {}
        domain = meta.get("domain")
        if self.options.domain is not None and domain != self.options.domain:
            self.skipped_domain += 1
            return
        self.sequences += 1
        # one str object per distinct piece: contexts kept from many records then share them, so memory is
        # bounded by the vocabulary, not by how many records the kept contexts came from
        canonical = self._pieces
        try:
            pieces = [canonical.setdefault(piece, piece) for piece in pieces]
        except TypeError:
            raise FormatError(f"trace record {number} (doc {record.get('doc_id')!r}): 'pieces' must be "
                              "strings") from None
        length = experts.shape[1]
        self.tokens += length
        if length == 0:
            return
        if len(self.rows) != len(self.layers):
            experts, values = experts[self.rows], values[self.rows]
        # layers in chunks: the dense (rows, T, E) arrays of one chunk stay under ~8M entries (big models)
        rows_per_chunk = max(1, DENSE_BUDGET // max(1, (length + self.options.context) * self.num_experts))
        for first in range(0, len(self.rows), rows_per_chunk):
            part = slice(first, min(first + rows_per_chunk, len(self.rows)))
            self._feed(record, experts[part].astype(np.int64), values[part].astype(np.float32), pieces, offset,
                       meta, domain, first)

    def _feed(self, record, experts, values, pieces, offset, meta, domain, first: int) -> None:
        """One record, MoE-layer rows ``first .. first + len(experts)`` of the selected rows."""
        chunk = _Chunk(self, record, experts, values, pieces, offset, meta, first)
        self._count_firing(chunk)
        positive, key_w, hash_w = self._positive_candidates(chunk)
        negative, key_n, hash_n = self._negative_candidates(chunk)
        explain, holdout = chunk.sides
        options = self.options
        self._offer(self.top, first, chunk.cell_max, hash_w, positive & explain, chunk.positive_examples)
        self._offer(self.weighted, first, key_w, hash_w, positive & explain, chunk.positive_examples)
        self._offer(self.holdout_positive, first, key_w, hash_w, positive & holdout, chunk.positive_examples)
        self._offer(self._bank(self.negative, domain, options.negatives), first, key_n, hash_n,
                    negative & explain, chunk.negative_examples)
        self._offer(self._bank(self.holdout_negative, domain, options.holdout_negative), first, key_n, hash_n,
                    negative & holdout, chunk.negative_examples)

    def _count_firing(self, chunk: _Chunk) -> None:
        """Per (layer, expert): firing tokens and the largest activation seen."""
        self.firing[chunk.part] += chunk.fire_count.sum(axis=1)
        np.maximum(self.max_activation[chunk.part], chunk.cell_max.max(axis=1), out=self.max_activation[chunk.part])

    def _positive_candidates(self, chunk: _Chunk):
        """Cells where the expert fires at least once: (mask (R, C, E), weighted key, tie hash)."""
        positive = (chunk.fire_count > 0) & self.expert_mask
        hash_w = content_hash(chunk.root, PURPOSE_WEIGHTED, chunk.cell_ids, chunk.layer_ids, chunk.expert_ids)
        key_w = np.where(positive, weighted_log_key(to_uniform(hash_w), chunk.cell_max), -np.inf)  # (R, C, E)
        self.positive_cells[0, chunk.part] += (positive & chunk.sides[0]).sum(axis=1)
        self.positive_cells[1, chunk.part] += (positive & chunk.sides[1]).sum(axis=1)
        return positive, key_w, hash_w

    def _negative_candidates(self, chunk: _Chunk):
        """Cells with at least one eligible (non-firing) token, weight = their eligible tokens:
        (mask (R, C, E), weighted key, tie hash)."""
        options, grid = self.options, chunk.grid
        if options.negative_span > 1 or options.hard_negatives == "token":
            chunk.eligible = self._eligible(chunk.record, chunk.experts, chunk.valid, grid)
            negative_count = chunk.eligible.reshape(chunk.rows, grid.cells, grid.width, self.num_experts).sum(axis=2)
        else:
            negative_count = grid.tokens_per_cell()[None, :, None] - chunk.fire_count
        negative = (negative_count > 0) & self.expert_mask
        hash_n = content_hash(chunk.root, PURPOSE_NEGATIVE, chunk.cell_ids, chunk.layer_ids, chunk.expert_ids)
        key_n = np.where(negative, weighted_log_key(to_uniform(hash_n), negative_count), -np.inf)
        self.negative_cells[0, chunk.part] += (negative & chunk.sides[0]).sum(axis=1)
        self.negative_cells[1, chunk.part] += (negative & chunk.sides[1]).sum(axis=1)
        return negative, key_n, hash_n

    @staticmethod
    def _offer(bank: HeapBank, first: int, keys, ties, allowed, make) -> None:
        """Offer every allowed (row, cell, expert) candidate whose key can enter ``bank``.

        Admission is decided one candidate at a time (exact heap semantics); the
        admitted candidates' contexts are then cut out together, vectorised.
        """
        if bank.capacity == 0:
            return
        threshold = bank.threshold[first:first + keys.shape[0], None, :]  # (rows, 1, E)
        candidates = allowed & np.isfinite(keys) & (keys >= threshold)
        r, c, e = np.nonzero(candidates)
        if not len(r):
            return
        key_list, tie_array = keys[r, c, e].tolist(), ties[r, c, e]
        admitted, slots = [], []
        for i, (ri, ei, key, tie) in enumerate(zip(r.tolist(), e.tolist(), key_list, tie_array.tolist())):
            if bank.admits(first + ri, ei, key, tie):
                slot = [None]  # filled below: most admissions of a record are cut out in one batch
                bank.push(first + ri, ei, key, tie, slot)
                admitted.append(i)
                slots.append(slot)
        if admitted:
            chosen = np.asarray(admitted)
            for slot, example in zip(slots, make(r[chosen], c[chosen], e[chosen], tie_array[chosen])):
                slot[0] = example

    def _eligible(self, record, experts, valid, grid: Grid) -> np.ndarray:
        """(R, C·W, E) bool: negative-eligible token positions (span and token matching applied)."""
        rows, num_experts = experts.shape[0], self.num_experts
        eligible = np.zeros((rows, grid.padded, num_experts), dtype=bool)
        tokens = np.asarray(record.get("tokens")) if self.options.hard_negatives == "token" else None
        if tokens is not None and tokens.shape != (grid.length,):
            raise FormatError(f"trace record of doc {record.get('doc_id')!r}: 'tokens' must have shape "
                              f"({grid.length},) for --hard-negatives token")
        for r in range(rows):
            firing = np.zeros((grid.length, num_experts), dtype=bool)  # (T, E)
            t_index, k_index = np.nonzero(valid[r])
            firing[t_index, experts[r, t_index, k_index]] = True
            allowed = negative_span_ok(firing, self.options.negative_span) & ~firing
            if tokens is not None:
                allowed &= token_matched(firing, tokens)
            eligible[r, grid.pad:grid.pad + grid.length] = allowed
        return eligible

    def _lens(self, record, lens, experts, r, row, e, t0, t1):
        """[(id, piece)] the expert's output promotes (logit lens) at its firing tokens of one context."""
        if lens is None:
            return None
        lens = np.asarray(lens)  # (L, T, K, J), the full L axis even when --layers filters rows
        if lens.ndim != 4 or lens.shape[0] != len(self.layers) or lens.shape[1:3] != experts.shape[1:]:
            return None
        chosen = experts[r, t0:t1] == e  # (W, K)
        ids = lens[self.rows[row], t0:t1][chosen].reshape(-1)
        names = record.get("logit_lens_pieces") or {}
        return [(int(i), str(names.get(str(int(i)), ""))) for i in ids]

    # -- the result ------------------------------------------------------------------------------
    def results(self):
        """Expert records, in (layer, expert) order, and the summary for the end record."""
        from .assemble import assemble

        return assemble(self)


class _Chunk:
    """One chunk of a record: its MoE-layer rows ``first .. first + R`` (a chunk keeps the dense
    arrays under DENSE_BUDGET) laid on the context grid (C cells of W positions, C·W padded):
    the dense activations and per-cell figures every example set draws from, the
    explain/holdout side of each cell, and the cutting of examples out of it."""

    def __init__(self, sampler: Sampler, record: dict, experts, values, pieces, offset: int, meta: dict,
                 first: int):
        options, num_experts = sampler.options, sampler.num_experts
        self.sampler, self.record, self.experts, self.pieces, self.offset, self.meta = (
            sampler, record, experts, pieces, offset, meta)
        self.first, self.rows = first, experts.shape[0]
        rows = self.rows
        self.part = slice(first, first + rows)
        self.grid = grid = Grid.of(offset, experts.shape[1], options.context)
        cells, width, padded = grid.cells, grid.width, grid.padded
        self.valid = valid = experts < num_experts  # (R, T, K); padding slots hold all-ones ids
        row_index = np.arange(rows, dtype=np.int64)[:, None, None]
        token_index = np.arange(grid.length, dtype=np.int64)[None, :, None]
        self.flat = flat = ((row_index * padded + grid.pad + token_index) * num_experts + experts)[valid]
        dense = np.zeros(rows * padded * num_experts, dtype=np.float32)
        dense[flat] = values[valid]
        self.dense = dense.reshape(rows, padded, num_experts)  # (R, C·W, E) activation, 0 where not selected
        self.cell_max = self.dense.reshape(rows, cells, width, num_experts).max(axis=2)  # (R, C, E)
        cell_key = (row_index * cells + grid.cell_of_token()[None, :, None]) * num_experts + experts
        fire_count = np.bincount(cell_key[valid], minlength=rows * cells * num_experts)
        self.fire_count = fire_count.reshape(rows, cells, num_experts)  # (R, C, E) firing tokens per cell
        self.real = np.zeros(padded, dtype=bool)  # (C·W,) grid positions that are tokens of this record
        self.real[grid.pad:grid.pad + grid.length] = True

        starts = grid.cell_starts()  # (C,)
        self.root = document_key(options.seed, record.get("doc_id"))
        self.region = starts // options.split_region if options.split_region else np.zeros_like(starts)
        holdout = to_uniform(content_hash(self.root, PURPOSE_SPLIT, self.region)) < options.holdout_fraction  # (C,)
        self.sides = (~holdout[None, :, None], holdout[None, :, None])  # (explain, holdout) cells
        self.layer_ids = sampler.row_layers[self.part, None, None]
        self.expert_ids = np.arange(num_experts, dtype=np.int64)[None, None, :]
        self.cell_ids = starts[None, :, None]
        self.eligible = None  # (R, C·W, E) negative-eligible tokens, when span or token matching asks for it
        self._selected = None  # (R, C·W, E) where the expert is selected, made on first need

        self.lens = record.get("logit_lens")
        token_ids = record.get("tokens")
        if token_ids is not None:
            token_ids = np.asarray(token_ids)
            token_ids = token_ids if token_ids.shape == (grid.length,) else None
        self.token_ids = token_ids
        self.positions = np.arange(width, dtype=np.int64)[None, :]

    def examples(self, r, c, e, marks, activations) -> list[Example]:
        """Example tuples for candidates (r, c, e) with marks / activations in cell coordinates."""
        grid, width = self.grid, self.grid.width
        begin = np.maximum(c * width - grid.pad, 0)  # record-local [t0, t1) of each cell
        end = np.minimum((c + 1) * width - grid.pad, grid.length)
        skip = begin - (c * width - grid.pad)  # cell positions before the first real token
        doc_id, window = self.record.get("doc_id"), self.record.get("window")
        out = []
        for i, (ri, ci, ei, t0, t1, lo) in enumerate(zip(r.tolist(), c.tolist(), e.tolist(), begin.tolist(),
                                                         end.tolist(), skip.tolist())):
            out.append(Example(doc_id, window, self.offset + t0, int(marks[i]) - lo, self.pieces[t0:t1],
                               activations[i, lo:lo + t1 - t0].copy(), float(self.cell_max[ri, ci, ei]), self.meta,
                               int(self.region[ci]),
                               None if self.lens is None
                               else self.sampler._lens(self.record, self.lens, self.experts, ri, self.first + ri, ei,
                                                       t0, t1),
                               None if self.token_ids is None else self.token_ids[t0:t1].copy()))
        return out

    def positive_examples(self, r, c, e, ties) -> list[Example]:
        """Contexts of positive candidates, marked at the cell's largest activation."""
        columns = (c * self.grid.width)[:, None] + self.positions  # (n, W) grid positions of each cell
        activations = self.dense[r[:, None], columns, e[:, None]]  # (n, W)
        marks = np.where(self.real[columns], activations, -1.0).argmax(axis=1)  # the cell's maximum
        return self.examples(r, c, e, marks, activations)

    def negative_examples(self, r, c, e, ties) -> list[Example]:
        """Contexts of negative candidates, marked at an eligible token drawn uniformly (by the tie hash)."""
        columns = (c * self.grid.width)[:, None] + self.positions  # (n, W)
        if self.eligible is not None:
            allowed = self.eligible[r[:, None], columns, e[:, None]]
        else:
            allowed = self.real[columns] & ~self.selected()[r[:, None], columns, e[:, None]]
        count = allowed.sum(axis=1)  # > 0 for every candidate
        pick = to_uniform(content_hash(PURPOSE_MARK, ties))  # uniform among the eligible tokens
        nth = np.minimum((pick * count).astype(np.int64), count - 1)
        marks = (np.cumsum(allowed, axis=1) > nth[:, None]).argmax(axis=1)
        found = self.examples(r, c, e, marks, self.dense[r[:, None], columns, e[:, None]])
        return [example._replace(score=0.0) for example in found]

    def selected(self) -> np.ndarray:
        """(R, C·W, E) bool: the expert is selected at that grid position."""
        if self._selected is None:
            selected = np.zeros(self.rows * self.grid.padded * self.sampler.num_experts, dtype=bool)
            selected[self.flat] = True
            self._selected = selected.reshape(self.rows, self.grid.padded, self.sampler.num_experts)
        return self._selected
