"""Typed exceptions of the library.

Library code raises these; only ``moetools.cli.common`` turns them into exit
codes (the contract is documented in every man page, section EXIT STATUS):

====  ==========================================================
code  meaning
====  ==========================================================
0     success
1     runtime failure (``MoetoolsError``, I/O errors, anything unexpected)
2     usage error or invalid input (``UsageError``, ``FormatError`` and subclasses)
3     truncated or empty input: a stream ended before its end record (``TruncatedStreamError``),
      or a corpus with no bytes or only empty documents (``EmptyInputError``)
141   stdout closed early by the reader (SIGPIPE, e.g. ``| head``): quiet exit
====  ==========================================================
"""

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_TRUNCATED = 3
EXIT_SIGPIPE = 141


class MoetoolsError(Exception):
    """Base class; a runtime failure (exit 1) unless a subclass says otherwise."""

    exit_code = EXIT_FAILURE


class UsageError(MoetoolsError):
    """Bad arguments or options (exit 2)."""

    exit_code = EXIT_USAGE


class FormatError(MoetoolsError):
    """Input that is not a valid moetools stream or file (exit 2)."""

    exit_code = EXIT_USAGE


class VersionError(FormatError):
    """A stream written with a format version this reader does not support (exit 2)."""


class ModelMismatchError(FormatError):
    """Concatenated segments (or two inputs) that describe different models (exit 2)."""


class KindError(FormatError):
    """A stream of the wrong kind for this tool, e.g. labels given to moe-sample (exit 2)."""


class TruncatedStreamError(FormatError):
    """A stream that ends before its end record, or inside a record or zstd frame (exit 3)."""

    exit_code = EXIT_TRUNCATED


class EmptyInputError(MoetoolsError):
    """Input with nothing to read: no bytes, or a corpus whose every document is empty (exit 3)."""

    exit_code = EXIT_TRUNCATED


class TrainingDivergedError(MoetoolsError):
    """Training met a non-finite loss or gradient and stopped without writing its result (exit 1)."""


class ModelError(MoetoolsError):
    """A model directory that cannot be loaded or is not a supported MoE (exit 2)."""

    exit_code = EXIT_USAGE
