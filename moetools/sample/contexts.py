"""Contexts: the windows of text an example is made of (formats/samples.md, "Contexts").

A context is one cell of a fixed grid laid over each *document*: cell ``c``
covers document tokens ``[c·W, (c+1)·W)`` (``W`` = ``--context``, default 32),
clipped to the trace window (sequence record) that holds it. Why a grid and not
a window centred on each firing token:

* cells never overlap, so two examples never show the same text twice, a
  strong firing cannot fill the top-N with shifted copies of itself, and the
  explain/holdout split (by region, a run of whole cells) is disjoint by
  construction;
* ``max`` over a cell is the paper's ranking value (paper 002: the score of a
  sequence is ``max_{x∈s} g_i(x)·‖E_i(x)‖₂``) at a length an explainer can read;
  32 tokens is delphi's default and long enough to carry the local topic;
* the grid is fixed in document coordinates, so a cell's identity (and every
  hash about it) does not depend on how moe-trace cut the document into
  windows of ``--max-length`` (a multiple of 32 in practice).

Positions outside the record (the grid's padding at either end) are never
tokens: they carry no activation and are never marked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


@dataclass
class Grid:
    """The cells of one sequence record: ``pad`` grid positions before its first token, ``cells`` cells."""

    offset: int        # document position of the record's first token
    length: int        # T, tokens in the record
    width: int         # W, tokens per cell
    pad: int           # offset % W
    cells: int         # C

    @classmethod
    def of(cls, offset: int, length: int, width: int) -> Grid:
        pad = offset % width
        return cls(offset, length, width, pad, -(-(pad + length) // width))

    @property
    def padded(self) -> int:
        return self.cells * self.width

    def bounds(self, cell: int) -> tuple[int, int]:
        """Record-local token range [t0, t1) of ``cell``."""
        return max(0, cell * self.width - self.pad), min(self.length, (cell + 1) * self.width - self.pad)

    def cell_starts(self) -> np.ndarray:
        """Document position of each cell's first grid position, (C,) int64."""
        return self.offset - self.pad + np.arange(self.cells, dtype=np.int64) * self.width

    def tokens_per_cell(self) -> np.ndarray:
        """Real tokens in each cell, (C,) int64 (the first and last may be partial)."""
        starts = np.arange(self.cells, dtype=np.int64) * self.width - self.pad
        return np.minimum(starts + self.width, self.length) - np.maximum(starts, 0)

    def cell_of_token(self) -> np.ndarray:
        """Cell index of each record token, (T,) int64."""
        return (np.arange(self.length, dtype=np.int64) + self.pad) // self.width


class Example(NamedTuple):
    """A context as the heaps hold it (compact; :func:`context_record` makes the output map)."""

    doc_id: str
    window: object
    offset: int            # document position of the first token
    mark: int              # index of the marked token in the context
    pieces: list           # T token texts
    activation: np.ndarray  # (T,) float32, this expert's activation per token
    score: float
    meta: object
    region: int
    lens: list | None      # [(token id, piece)] the expert promotes at its firing tokens (logit lens)
    tokens: np.ndarray | None = None  # (T,) int32 token ids, when the trace has them

    @property
    def id(self) -> str:
        return f"{self.doc_id}@{self.offset}+{self.mark}"


def context_record(example: Example) -> dict:
    """The context map of formats/samples.md."""
    return {
        "id": example.id,
        "doc_id": example.doc_id,
        "window": example.window,
        "offset": int(example.offset),
        "mark": int(example.mark),
        "pieces": list(example.pieces),
        "activation": np.ascontiguousarray(example.activation, dtype="<f4"),
        "score": float(example.score),
        "meta": example.meta,
        "region": int(example.region),
        **({} if example.tokens is None else {"tokens": np.ascontiguousarray(example.tokens, dtype="<i4")}),
    }


def negative_span_ok(firing: np.ndarray, span: int) -> np.ndarray:
    """Positions whose last ``span`` tokens (itself included, clipped at the record start) never fire.

    ``firing`` (T, E) bool -> (T, E) bool. With ``span`` 1 this is just ``~firing``.
    """
    if span <= 1:
        return ~firing
    counts = np.cumsum(firing, axis=0, dtype=np.int32)  # (T, E)
    before = np.zeros_like(counts)
    before[span:] = counts[:-span]
    return (counts - before) == 0


def token_matched(firing: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Hard negatives by token: ``(t, e)`` where token ``tokens[t]`` fires expert ``e`` elsewhere in the record.

    ``firing`` (T, E) bool, ``tokens`` (T,) -> (T, E) bool (true also at firing positions;
    the caller intersects with "not firing here").
    """
    unique, index = np.unique(tokens, return_inverse=True)
    fires_on = np.zeros((len(unique), firing.shape[1]), dtype=bool)  # (U, E)
    t_fire, e_fire = np.nonzero(firing)
    fires_on[index[t_fire], e_fire] = True
    return fires_on[index]
