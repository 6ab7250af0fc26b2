"""May this output be written? The one rule every tool applies to ``-o`` (formats/README.md, "Outputs").

    check_output("scores.msgpack.zst", inputs=["a.zst"], force=False)          # UsageError (exit 2) or a verdict
    check_output("masked/", inputs=["models/olmoe"], force=True, directory=True)

The rule:

- an output is never an input, an ancestor of an input (a directory holding it) or a
  descendant of one (a path inside an input directory); paths are compared after resolving
  symbolic links, so a link or ``..`` does not get around it;
- an existing output is refused unless ``--force``;
- ``--force`` replaces only what this suite wrote: a directory holding :data:`MARKER` (every
  output directory gets one), or a file in one of the suite's formats (a moetools stream, a
  JSON file carrying a ``moetools`` block such as experts.json, moe-cat's ``--summary``, a
  moe-report page), or an empty file or directory; anything else is refused even with
  ``--force`` (remove it yourself);
- a replacement is atomic: files through ``NAME.partial`` and ``os.replace``, directories
  through ``NAME.partial/`` exchanged with the old one (``renameat2(RENAME_EXCHANGE)``, or
  where the file system lacks it the old one renamed to ``NAME.old`` for the moment of the
  swap, which :func:`recover_directory` renames back after a kill).

Nothing here imports click: the CLI (``moetools.cli.common.output_guard``) and the library's
writers of directories (moe-mask, moe-tune, monet-train, corpus build) call the same function.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from ..errors import UsageError

#: written inside every output directory of the suite: what --force may replace
MARKER = ".moetools-output.json"
MARKER_FORMAT = "moetools-output"
#: a moe-report page says so in its head
REPORT_GENERATOR = "<meta name=generator content=moe-report>"
_SUMMARY_KEYS = frozenset({"inputs", "encodings", "segments", "records", "by_type", "complete"})
_PEEK_BYTES = 1 << 16

NEW, REPLACE, CONTINUE = "new", "replace", "continue"


def _resolved(path) -> Path:
    return Path(os.path.realpath(os.fspath(path)))


def check_not_an_input(output, inputs: Iterable = ()) -> None:
    """UsageError when ``output`` is an input, holds one, or lies inside an input directory."""
    target = _resolved(output)
    for given in inputs:
        if given in (None, "-") or not os.path.lexists(os.fspath(given)):
            continue
        source = _resolved(given)
        if source == target:
            raise UsageError(f"-o {output} is the input {given}: choose another output")
        if target in source.parents:
            raise UsageError(f"-o {output} holds the input {given}: choose an output outside it")
        if source in target.parents:
            raise UsageError(f"-o {output} lies inside the input {given}: choose an output outside it")


def write_marker(directory, tool: str | None = None) -> None:
    """Mark ``directory`` as an output of this suite (what ``--force`` may later replace)."""
    from .. import __version__

    record = {"format": MARKER_FORMAT, "version": 1, "tool": tool, "moetools": __version__}
    (Path(directory) / MARKER).write_text(json.dumps(record) + "\n", encoding="utf-8")


def is_suite_directory(path) -> bool:
    """A directory this suite wrote (its marker file), or an empty one."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return False
    if (path / MARKER).is_file():
        return True
    return not any(path.iterdir())


def is_suite_file(path) -> bool:
    """A regular file in one of the suite's output formats, or an empty one."""
    path = Path(path)
    if path.is_symlink() or not path.is_file():
        return False
    with open(path, "rb") as handle:
        head = handle.read(_PEEK_BYTES)
    if not head:
        return True
    if _is_stream(path, head):
        return True
    if REPORT_GENERATOR.encode("ascii") in head[:4096] and head.lstrip().lower().startswith(b"<!doctype html>"):
        return True
    if head.lstrip().startswith(b"{") and path.stat().st_size <= 64 << 20:
        try:
            value = json.loads(path.read_bytes())
        except (ValueError, UnicodeDecodeError):
            return False
        if isinstance(value, dict):
            block = value.get("moetools")
            if isinstance(block, dict) and isinstance(block.get("tool"), dict):
                return True  # experts.json and other JSON files with the suite's provenance block
            if _SUMMARY_KEYS <= set(value):
                return True  # moe-cat --summary
    return False


def _is_stream(path: Path, head: bytes) -> bool:
    """A moetools stream: its header record reads (the rest may be truncated)."""
    from ..errors import MoetoolsError
    from .reader import ZSTD_MAGIC, StreamReader

    if head.lstrip()[:1] == b"{" and b"\n" not in head:
        return False  # JSON lines: the header is one short line (a long JSON document is not read whole here)
    if not head.startswith(ZSTD_MAGIC) and head.lstrip()[:1] != b"{" and not 0x80 <= head[0] <= 0x8F \
            and head[0] not in (0xDE, 0xDF):
        return False

    try:
        with open(path, "rb") as handle:
            StreamReader(handle)
        return True
    except (MoetoolsError, OSError, ValueError):
        return False


def check_output(path, *, inputs: Iterable = (), force: bool = False, directory: bool = False,
                 resume: bool = False) -> str:
    """Decide whether ``path`` may be written: :data:`NEW`, :data:`REPLACE` (``force``) or :data:`CONTINUE`
    (``resume``: an existing output of the suite is continued); UsageError (exit 2) otherwise.

    ``-``/None (standard output) is always :data:`NEW`. ``directory``: the output is a directory.
    """
    if path in (None, "-"):
        return NEW
    inputs = list(inputs)
    check_not_an_input(path, inputs)
    target = Path(path)
    if directory:
        recover_directory(target)
    if not os.path.lexists(target):
        return NEW
    ours = is_suite_directory(target) if directory else is_suite_file(target)
    what = "directory" if directory else "file"
    if directory and not target.is_dir():
        raise UsageError(f"-o {path} exists and is not a directory: choose another output")
    if not directory and not target.is_file():
        raise UsageError(f"-o {path} exists and is not a regular file: choose another output")
    if resume:
        if not ours:
            raise UsageError(f"-o {path}: this {what} was not written by moetools; refusing to continue it")
        return CONTINUE
    if not force:
        raise UsageError(f"-o {path} exists: use --force to replace it")
    if not ours:
        raise UsageError(f"-o {path}: this {what} was not written by moetools; refusing to replace it, even "
                         "with --force (remove it yourself, or choose another output)")
    return REPLACE


def check_outputs_of(paths: Iterable, **kwargs) -> None:
    for path in paths:
        check_output(path, **kwargs)


# -- modes: what the umask says, as for any file the user creates ------------------------------------------

def current_umask() -> int:
    """The process's umask (read from /proc where it is, without changing it; else set and restored)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(directory) -> None:
    """Give ``directory`` and everything in it the modes the umask gives new files (0644 / 0755 under umask
    022): safetensors writes its files 0600, which another user of a shared cluster cannot read."""
    mask = current_umask()
    for root, directories, names in os.walk(directory):
        os.chmod(root, 0o777 & ~mask)
        for name in names:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, 0o666 & ~mask)


# -- replacing a directory atomically ----------------------------------------------------------------

def aside_path(target) -> Path:
    """Where a directory being replaced waits for the moment of the swap (file systems without exchange)."""
    target = Path(target)
    return target.with_name(target.name + ".old")


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(code, os.strerror(code), str(second))


def remove_suite_directory(path) -> None:
    """Remove a directory this suite wrote (marker or empty); UsageError for any other."""
    path = Path(path)
    if not os.path.lexists(path):
        return
    if not is_suite_directory(path):
        raise UsageError(f"{path} was not written by moetools; refusing to remove it (remove it yourself)")
    shutil.rmtree(path)


def recover_directory(target) -> None:
    """After a kill in the middle of a swap: ``NAME.old`` (the suite's) without ``NAME`` is renamed back.
    (A ``NAME.old`` beside ``NAME`` is removed by the next replacement, or by the training run that
    set it aside once that run is complete.)"""
    target = Path(target)
    aside = aside_path(target)
    if not aside.is_dir() or not is_suite_directory(aside):
        return
    if not os.path.lexists(target):
        os.rename(aside, target)


def publish_directory(partial, target) -> None:
    """Put the finished directory ``partial`` at ``target``; an existing ``target`` (already allowed by
    :func:`check_output`) is exchanged atomically and then removed."""
    partial, target = Path(partial), Path(target)
    if not os.path.lexists(target):
        os.rename(partial, target)
        return
    if _exchange(partial, target):
        shutil.rmtree(partial)  # the old output, now under the partial name
        return
    aside = aside_path(target)
    remove_suite_directory(aside)
    os.rename(target, aside)  # a kill here: recover_directory renames it back
    os.rename(partial, target)
    shutil.rmtree(aside)


# -- training outputs: written in place over many steps -------------------------------------------------

def prepare_training_directory(path, *, inputs: Iterable = (), force: bool = False, resume: bool = False,
                               complete_file: str, tool: str | None = None) -> Path:
    """The output directory of a training run (moe-tune, monet-train), made ready for writing.

    New: created with its marker. ``resume``: continued (it must be the suite's). ``force``: the
    old directory is renamed to ``NAME.old`` and a fresh one made; ``NAME.old`` is removed by
    :func:`finish_training_directory` when the new run is complete (``complete_file`` written),
    so a kill in between leaves the old output complete beside the unfinished new one. A rerun
    with ``--force`` then keeps that ``NAME.old`` and starts the new one over.
    """
    out = Path(path)
    if resume:  # the caller checks that OUT holds its checkpoint
        check_not_an_input(out, inputs)
        verdict = CONTINUE
    else:
        verdict = check_output(out, inputs=inputs, force=force, directory=True)
    if verdict == REPLACE:
        aside = aside_path(out)
        if os.path.lexists(aside) and not (out / complete_file).exists():
            remove_suite_directory(out)  # an unfinished replacement: the complete old one stays aside
        else:
            remove_suite_directory(aside)
            os.rename(out, aside)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / MARKER).exists():
        write_marker(out, tool)
    return out


def finish_training_directory(path) -> None:
    """The new run is complete: modes as the umask says (:func:`apply_umask`), and the output it replaced
    (``NAME.old``) goes."""
    apply_umask(path)
    with contextlib.suppress(UsageError):
        remove_suite_directory(aside_path(path))


__all__ = ["CONTINUE", "MARKER", "NEW", "REPLACE", "REPORT_GENERATOR", "apply_umask", "aside_path", "check_not_an_input",
           "check_output", "finish_training_directory", "is_suite_directory", "is_suite_file",
           "prepare_training_directory", "publish_directory", "recover_directory", "remove_suite_directory",
           "write_marker"]
