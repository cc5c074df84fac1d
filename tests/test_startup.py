"""Startup and the command line's own errors: Click's usage errors are one `error:` line like every other
user mistake."""

from __future__ import annotations

import pytest

from conftest import invoke


# ---------------------------------------------------------------------------------------------- usage errors
@pytest.mark.parametrize("args, fragment, command", [
    (["search", "--epochs", "abc"], "invalid value for '--epochs'", "nas search"),
    (["compare"], "missing argument 'run_dirs'", "nas compare"),
    (["search", "--no-such-option"], "no such option: --no-such-option", "nas search"),
    (["derive"], "missing argument", "nas derive"),
    (["frobnicate"], "no such command 'frobnicate'", "nas"),
])
def test_usage_errors_are_one_error_line_in_process(args, fragment, command):
    r = invoke(*args)
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1, r.output
    assert lines[0].startswith("error: ") and fragment in lines[0], lines[0]
    assert lines[0].endswith(f"(see `{command} --help`)"), lines[0]
    assert "╭" not in r.output and "Usage:" not in r.output


def test_help_still_works_and_debug_still_shows_the_traceback():
    r = invoke("search", "--help")
    assert r.exit_code == 0 and "--epochs" in r.output
    r = invoke("--debug", "search", "--epochs", "abc")
    assert r.exit_code != 0 and r.exception is not None and "error:" not in r.output
    r = invoke("search", "--epochs", "abc")  # --debug does not stick to the next command line of a process
    assert r.exit_code == 2 and r.output.startswith("error:")
