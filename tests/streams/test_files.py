"""moetools.streams.files: the one file digest that moe-mask records and moe-report compares (formats/mask.md)."""

from __future__ import annotations

import hashlib

from moetools.streams.files import file_sha256


def test_file_sha256_is_the_digest_of_every_byte_across_read_blocks(tmp_path):
    path = tmp_path / "blob"
    data = bytes(range(256)) * (5 * 4096 + 17)  # 5 MiB and a bit: several 1 MiB reads and a short last one
    path.write_bytes(data)
    assert file_sha256(path) == "sha256:" + hashlib.sha256(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert file_sha256(str(tmp_path / "empty")) == "sha256:" + hashlib.sha256(b"").hexdigest()
