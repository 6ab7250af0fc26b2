"""The domain-labelled offline corpus (code, legal, medical, math, general, offensive).

``build_corpus(output_dir)`` writes train/validation/test JSON lines and a manifest
from resources installable by package name (see :mod:`moetools.corpus.sources`);
``moetools corpus build`` is its command line.
"""

from .builder import (
                      BUILDER_VERSION,
                      DEFAULT_MAX_CHARS,
                      DEFAULT_MAX_TOKENS_PER_DOMAIN,
                      MIN_TOKENS_PER_DOMAIN,
                      build_corpus,
                      collect_domain,
)
from .sources import DOMAINS, Document, MissingSourceError, Source, make_source
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
                      "Document",
                      "MissingSourceError",
                      "Source",
                      "build_corpus",
                      "chunk_text",
                      "collect_domain",
                      "count_tokens",
                      "make_source",
                      "split_of",
]
