"""The public surface and the direction of imports, held in place."""

from __future__ import annotations

import ast
from pathlib import Path

import bdurable
from bdurable import errors

ROOT = Path(__file__).resolve().parent.parent

PUBLIC = {
    "ChildWorkflowError", "Client", "Context", "DeadLetter", "DeadLetterNotFoundError", "DeadLetterNotParkedError",
    "DurableError", "EncryptionKeyMissingError", "EventTimeoutError", "HistoryEntry", "InvalidInputError",
    "NonDeterminismError", "NonRetryableError", "PayloadIntegrityError", "PayloadTooLargeError",
    "PayloadUnreadableError", "RegistrationError", "ReplicationError", "ResultTimeoutError",
    "ScheduleAlreadyExistsError", "ScheduleInfo", "ScheduleNotFoundError", "Settings", "Signal",
    "Status", "Task", "TaskFailedError", "UnknownWorkflowError", "VersionNotLiveError", "Worker", "Workflow",
    "WorkflowAlreadyExistsError", "WorkflowCancelledError", "WorkflowFailedError", "WorkflowFinishedError",
    "WorkflowHandle", "WorkflowNotFoundError", "WorkflowNotHaltedError", "WorkflowPage", "WorkflowState",
    "WorkflowTimerError", "task", "workflow",
}  # fmt: skip


def test_the_public_names_are_exactly_these() -> None:
    assert set(bdurable.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(bdurable, name) is not None


def test_every_contract_error_is_a_durable_error_importable_from_both_places() -> None:
    for name in errors.__all__:
        error = getattr(errors, name)
        assert issubclass(error, errors.DurableError)
        assert getattr(bdurable, name) is error
    assert errors.WorkflowCancelledError.is_cancellation is True
    for name in errors.__all__:  # the seed's `except Exception as e: if e.is_cancellation:` works for every error
        if name != "WorkflowCancelledError":
            assert getattr(errors, name).is_cancellation is False, name


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_library_never_imports_a_service_at_module_level() -> None:
    """shared/ is the library every role uses; the CLI loads roles lazily, by name, inside functions."""
    offenders = []
    for path in (ROOT / "shared").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names.append(node.module)
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.startswith("bdurable.services")]
    assert offenders == []


def test_services_import_the_library_and_never_each_other() -> None:
    roles = [p for p in (ROOT / "services").iterdir() if p.is_dir() and (p / "__init__.py").exists()]
    assert {p.name for p in roles} == {"dispatcher", "scheduler", "reaper", "signal_bus", "console"}
    for role in roles:
        for path in role.rglob("*.py"):
            for name in _imports(path):
                assert not name.startswith(("shared", "services")), f"{path}: imports the source folder {name}"
                if name.startswith("bdurable.services."):
                    assert name.split(".")[2] == role.name, f"{path}: imports another role ({name})"


INTERNAL = ("bdurable.services", "bdurable.registry", "bdurable.runtime.service")


def test_tests_and_benchmarks_run_roles_through_the_public_surface() -> None:
    """A role runs in a test or a benchmark as users run it: ``bdurable.Worker`` or the ``bdurable`` command.
    Only the unit tests of ``tests/unit/`` import a role's modules (each tests one on its own)."""
    offenders = []
    files = [*(ROOT / "tests").rglob("*.py"), *(ROOT / "bench").rglob("*.py")]
    for path in files:
        if path.is_relative_to(ROOT / "tests" / "unit"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            else:
                continue
            offenders += [
                f"{path.relative_to(ROOT)}:{node.lineno}: {name}"
                for name in names
                if any(name == internal or name.startswith(f"{internal}.") for internal in INTERNAL)
            ]
    assert offenders == []
