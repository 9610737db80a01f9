"""``bdurable check``: each replay-breaking call in tests/apps/check_bad.py is found on its line.

The expected findings are the ``# BAD: <kind>`` markers in that file, so adding a case there is enough.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
import types
from pathlib import Path

import check_bad
import check_good
import pytest
from typer.testing import CliRunner

from bdurable.check import Finding, check_module, workflows_in
from bdurable.cli import app

KINDS = {
    "clock": "wall clock",
    "uuid": "random id",
    "random": "random",
    "sleep": "sleeps",
    "file": "file I/O",
    "network": "network I/O",
    "subprocess": "another process",
    "thread": "another thread",
}
FIXES = {
    "clock": "ctx.now()",
    "uuid": "ctx.uuid4()",
    "random": "ctx.",
    "sleep": "ctx.sleep",
    "file": "@task",
    "network": "@task",
    "subprocess": "@task",
    "thread": "@task",
}


def marked_lines() -> dict[int, str]:
    source = Path(inspect.getfile(check_bad)).read_text().splitlines()
    return {
        number: match.group(1)
        for number, line in enumerate(source, start=1)
        if (match := re.search(r"# BAD: (\w+)", line))
    }


def test_every_marked_line_is_found_with_its_fix_and_nothing_else() -> None:
    findings = check_module(check_bad)
    expected = marked_lines()
    by_line: dict[int, list[Finding]] = {}
    for finding in findings:
        by_line.setdefault(finding.line, []).append(finding)
    assert set(by_line) == set(expected)
    for line, kind in expected.items():
        assert any(KINDS[kind] in f.what and FIXES[kind] in f.fix for f in by_line[line]), (line, by_line[line])
    assert all(f.file.endswith("check_bad.py") for f in findings)


def test_aliases_helpers_and_local_imports_are_seen_through() -> None:
    calls = {(f.call, f.function.rsplit(".", 1)[-1]) for f in check_module(check_bad)}
    assert ("rnd.randint()", "clocks_and_chance") in calls  # import random as rnd
    assert ("choice()", "clocks_and_chance") in calls  # from random import choice
    assert ("time.monotonic()", "helper_reading_the_clock") in calls  # a helper the workflow calls
    assert ("clock.perf_counter()", "local_imports") in calls  # import inside the workflow
    assert ("time.sleep", "io_and_threads") in calls  # a callable handed to a thread


def test_clean_workflows_and_tasks_are_not_flagged() -> None:
    assert [w.name for w in workflows_in(check_good)] == ["convert"]
    assert check_module(check_good) == []


def test_finding_reads_as_file_line_what_and_fix() -> None:
    finding = next(f for f in check_module(check_bad) if f.call == "time.time()")
    text = str(finding)
    assert re.match(r"^\S*check_bad\.py:\d+:\d+: time\.time\(\) reads the wall clock", text)
    assert "fix: use ctx.now()" in text
    assert "[workflow clocks_and_chance@1]" in text
    assert set(finding.to_json()) == {"file", "line", "column", "workflow", "function", "call", "what", "fix"}


def test_cli_exit_codes_and_json() -> None:
    runner = CliRunner()
    bad = runner.invoke(app, ["check", "--app", "check_bad"])
    assert bad.exit_code == 1
    assert len(bad.stdout.splitlines()) == len(check_module(check_bad))
    assert "findings" in bad.stderr
    good = runner.invoke(app, ["check", "--app", "check_good"])
    assert good.exit_code == 0
    assert good.stdout == ""
    document = json.loads(runner.invoke(app, ["check", "--app", "check_bad", "--json"]).stdout)
    assert set(document) == {"workflows", "findings"}
    assert "io_and_threads@1" in document["workflows"]
    assert len(document["findings"]) == len(check_module(check_bad))


def test_cli_import_errors_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "check_syntax_error.py").write_text("def broken(:\n")
    (tmp_path / "check_raises.py").write_text("raise RuntimeError('at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    runner = CliRunner()
    for module, fragment in (
        ("check_missing_module", "ModuleNotFoundError"),
        ("check_syntax_error", "SyntaxError"),
        ("check_raises", "RuntimeError: at import"),
    ):
        result = runner.invoke(app, ["check", "--app", module])
        assert result.exit_code == 2
        assert result.stderr.startswith(f"error: cannot import --app module {module!r}")
        assert fragment in result.stderr
        assert "Traceback" not in result.stderr
        sys.modules.pop(module, None)


def test_source_that_cannot_be_read_is_reported() -> None:
    from bdurable import Context, workflow

    namespace: dict[str, object] = {"Context": Context}
    exec("async def ghost(ctx, input):\n    return input\n", namespace)  # no file to read the source from
    module = types.ModuleType("ghost_module")
    module.ghost = workflow(version="1")(namespace["ghost"])  # type: ignore[attr-defined, arg-type]
    (finding,) = check_module(module)
    assert "could not be read" in finding.what
