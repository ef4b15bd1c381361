"""Running the ``lmgc`` command in-process (click's CliRunner) for the format and error tests."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner, Result

from lmgc_core.cli.commands import cli


def lmgc(*args: str | Path, input: bytes | None = None, ok: bool = True) -> Result:
    """Run ``lmgc ARGS``; with ``ok`` the run must succeed."""
    result = CliRunner().invoke(cli, [str(a) for a in args], input=input)
    if ok:
        assert result.exit_code == 0, (args, result.stderr, result.exception)
    return result


def one_error_line(result: Result, status: int) -> str:
    """The run failed with ``status`` and said so in exactly one ``error:`` line."""
    assert result.exit_code == status, (result.exit_code, result.stderr, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr and "LMGC_DEBUG" not in result.stderr
    return lines[0]
