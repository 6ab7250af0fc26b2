"""Shared fixtures (keep this small; tool-specific helpers live in their test files)."""

from __future__ import annotations

import io

import pytest
from click.testing import CliRunner

from moetools.cli.launchers import write_launchers
from moetools.streams import StreamWriter


def pytest_sessionstart(session):
    """bin/<tool> links to bin/_launch, as `make bin` writes them: the tests run tools from the checkout."""
    write_launchers()

#: a model identity as moe-trace writes it (formats/README.md, "Header record")
MODEL = {"name": "tiny-moe", "path": None, "model_type": "olmoe", "num_layers": 2, "moe_layers": [0, 1],
         "num_experts": 4, "top_k": 2, "fingerprint": "sha256:" + "a1" * 32}
TOOL = {"name": "pytest", "version": "0", "args": {}}


def stream_bytes(records, *, kind: str = "trace", model: dict | None = MODEL, encoding: str = "msgpack",
                 compress: bool = True, end: bool = True, end_extra: dict | None = None, **writer_kwargs) -> bytes:
    """The bytes of one complete stream (no end record with ``end=False``)."""
    buffer = io.BytesIO()
    writer = StreamWriter(buffer, kind, tool=TOOL, model=model, encoding=encoding, compress=compress,
                          **writer_kwargs)
    for record in records:
        writer.write(record)
    if end:
        writer.close(**(end_extra or {}))
    else:
        writer.abandon()
    return buffer.getvalue()


@pytest.fixture
def make_stream():
    """``make_stream(records, kind=, model=, encoding=, compress=, end=)`` -> bytes."""
    return stream_bytes


@pytest.fixture
def run_tool():
    """``run_tool(command, args, input=bytes)`` -> click Result (stdout_bytes, stderr, exit_code)."""
    runner = CliRunner()

    def invoke(command, args=(), input: bytes | None = None):
        return runner.invoke(command, list(args), input=input, catch_exceptions=False)

    return invoke
