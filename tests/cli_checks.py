"""What the refusal tests check of a tool run: invoke it by name, and one line with its documented code."""

from __future__ import annotations

from click.testing import CliRunner

from moetools.cli import load_command


def invoke(tool: str, args, **kwargs):
    """Run the tool named ``tool`` (a console script name) in-process; a click Result."""
    return CliRunner().invoke(load_command(tool), [str(a) for a in args], catch_exceptions=False, **kwargs)


def one_line(result, tool: str, code: int, *fragments: str) -> str:
    """Exit ``code`` with exactly one stderr line ``tool: ...`` (no "internal error") holding ``fragments``."""
    assert result.exit_code == code, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{tool}: ") and "internal error" not in lines[0], result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]
