"""The one stream reader/writer every tool uses (specification: formats/README.md)."""

from .arrays import SUPPORTED_DTYPES, decode_array, decode_array_json, encode_array, encode_array_json
from .reader import (
    ZSTD_MAGIC,
    StreamReader,
    check_compatible,
    check_header,
    detect_encoding,
    model_fingerprint,
    read_stream,
)
from .schema import Schema, register_schema, schema_for
from .writer import (
    DEFAULT_FRAME_BYTES,
    DEFAULT_LEVEL,
    ENCODINGS,
    FORMAT_NAME,
    FORMAT_VERSION,
    StreamWriter,
    make_header,
)

__all__ = [
    "DEFAULT_FRAME_BYTES", "DEFAULT_LEVEL", "ENCODINGS", "FORMAT_NAME", "FORMAT_VERSION", "SUPPORTED_DTYPES",
    "ZSTD_MAGIC", "Schema", "StreamReader", "StreamWriter", "check_compatible", "check_header", "decode_array",
    "decode_array_json", "detect_encoding", "encode_array", "encode_array_json", "make_header", "model_fingerprint",
    "read_stream", "register_schema", "schema_for",
]
