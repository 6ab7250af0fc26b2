"""The domain-labelled offline corpus (code, legal, medical, math, general, offensive).

``build_corpus(output_dir)`` writes train/validation/test JSON lines and a manifest
from resources installable by package name (see :mod:`moetools.corpus.sources`);
``moetools corpus build`` is its command line. Reading a corpus back (any JSON-lines
or plain-text file, for trace, train, tune and eval) is :mod:`moetools.corpus.documents`:
its ``Document`` is a corpus line; a source's :class:`SourceText` is what the builder chunks.
"""

from .builder import (
                      BUILDER_VERSION,
                      DEFAULT_MAX_CHARS,
                      DEFAULT_MAX_TOKENS_PER_DOMAIN,
                      MIN_TOKENS_PER_DOMAIN,
                      build_corpus,
                      collect_domain,
)
from .sources import DOMAINS, MissingSourceError, Source, SourceText, make_source
from .splits import DEFAULT_FRACTIONS, SPLITS, split_of
from .text import TOKEN_PATTERN, chunk_text, count_tokens

__all__ = [
                      "BUILDER_VERSION",
                      "DEFAULT_FRACTIONS",
                      "DEFAULT_MAX_CHARS",
                      "DEFAULT_MAX_TOKENS_PER_DOMAIN",
                      "DOMAINS",
                      "MIN_TOKENS_PER_DOMAIN",
                      "SPLITS",
                      "TOKEN_PATTERN",
                      "MissingSourceError",
                      "Source",
                      "SourceText",
                      "build_corpus",
                      "chunk_text",
                      "collect_domain",
                      "count_tokens",
                      "make_source",
                      "split_of",
]
