"""The one stream reader/writer every tool uses (specification: formats/README.md)."""

from .arrays import SUPPORTED_DTYPES, decode_array, encode_array
from .reader import StreamReader, check_header, detect_encoding, model_fingerprint, read_stream
from .writer import DEFAULT_LEVEL, ENCODINGS, FORMAT_NAME, FORMAT_VERSION, StreamWriter, make_header

__all__ = [
    "SUPPORTED_DTYPES", "decode_array", "encode_array", "StreamReader", "check_header", "detect_encoding",
    "model_fingerprint", "read_stream", "DEFAULT_LEVEL", "ENCODINGS", "FORMAT_NAME", "FORMAT_VERSION",
    "StreamWriter", "make_header",
]
