"""``bdurable check``: statically flag workflow code that would break replay.

A workflow is re-run from the top on every step and its recorded durable calls are short-circuited, so
its code must make the same decisions every time. Reading the clock, drawing random numbers, making
ids, sleeping on the event loop, doing I/O or starting threads inside a workflow gives a different run
on replay (or repeats a side effect). This module reads each workflow's source (``inspect.getsource``
plus ``ast``), resolves what every call refers to through the module's real globals (so aliases such as
``import time as t`` or ``from random import choice`` are seen through), and reports each offending
call with the replay-safe alternative. Plain helper functions of the same module that a workflow calls
are checked too, since their code runs inside the workflow.

It is a linter, not a proof: calls through values it cannot resolve statically (a local variable holding
a function, ``getattr``) are not followed.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import os
import textwrap
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any

from bdurable.workflow import Workflow

__all__ = ["RULES", "Finding", "Rule", "check_module", "check_workflow", "workflows_in"]

_TASK = "move it into a @task and call the task from the workflow"


@dataclass(frozen=True, slots=True)
class Rule:
    """A family of calls that break replay: the names (``prefix.*`` for a whole module), why, and the fix."""

    names: tuple[str, ...]
    what: str
    fix: str
    max_args: int | None = None  # only when called with at most this many arguments (e.g. localtime())


def _rule(names: str, what: str, fix: str, max_args: int | None = None) -> Rule:
    return Rule(tuple(names.split()), what, fix, max_args)


_CLOCK = "reads the wall clock, which differs on every replay"
_PATH_METHODS = (
    "open read_text write_text read_bytes write_bytes exists is_file is_dir iterdir glob rglob mkdir unlink "
    "rmdir rename replace touch stat cwd home resolve expanduser"
)
_PATH_IO = " ".join(f"pathlib.Path.{method}" for method in _PATH_METHODS.split())

# First match wins, so the narrow rules (random.Random with a seed) come before the broad ones (random.*).
RULES: tuple[Rule, ...] = (
    _rule(
        "datetime.datetime.now datetime.datetime.utcnow datetime.datetime.today datetime.date.today time.time "
        "time.time_ns time.monotonic time.monotonic_ns time.perf_counter time.perf_counter_ns time.process_time "
        "time.process_time_ns pendulum.now arrow.now arrow.utcnow",
        _CLOCK,
        "use ctx.now()",
    ),
    _rule("time.localtime time.gmtime time.ctime time.asctime", _CLOCK, "use ctx.now()", max_args=0),
    _rule("time.strftime", _CLOCK, "use ctx.now().strftime(...)", max_args=1),
    _rule("uuid.uuid1 uuid.uuid4", "makes a new random id on every replay", "use ctx.uuid4()"),
    _rule("random.Random random.SystemRandom", "creates an unseeded random generator", "use ctx.random()", 0),
    _rule("random.* numpy.random.*", "draws a different random number on every replay", "use ctx.random()"),
    _rule(
        "secrets.* os.urandom os.getrandom",
        "draws different random bytes on every replay",
        f"use ctx.uuid4() or ctx.random(), or {_TASK} (its result is recorded)",
    ),
    _rule(
        "asyncio.sleep asyncio.tasks.sleep time.sleep anyio.sleep trio.sleep",
        "sleeps on this process's clock: not durable, and repeated on every replay",
        "use await ctx.sleep(...) (a durable timer)",
    ),
    _rule(
        "asyncio.wait_for asyncio.tasks.wait_for asyncio.timeout asyncio.timeouts.timeout asyncio.timeout_at "
        "asyncio.timeouts.timeout_at anyio.fail_after anyio.move_on_after",
        "times out by the wall clock, at a different point on every replay",
        "use ctx.wait_for_event(..., timeout=...) or a @task's timeout=",
    ),
    _rule(
        f"builtins.open io.open builtins.input {_PATH_IO} shutil.* tempfile.* glob.* os.listdir os.scandir "
        "os.walk os.remove os.unlink os.rename os.replace os.mkdir os.makedirs os.rmdir os.removedirs os.stat "
        "os.open os.read os.write os.path.exists os.path.isfile os.path.isdir os.path.getsize os.path.getmtime",
        "does file I/O, which is repeated (or reads something different) on every replay",
        _TASK,
    ),
    _rule(
        "os.getenv os.environ.get os._Environ.get os.getpid socket.gethostname",
        "reads this process's environment, which can differ between dispatchers and replays",
        "pass the value in the workflow input, or read it in a @task",
    ),
    _rule(
        "requests.* httpx.* aiohttp.* urllib.request.* urllib3.* http.client.* socket.* smtplib.* ftplib.* "
        "asyncio.open_connection asyncio.streams.open_connection asyncio.start_server "
        "asyncio.streams.start_server redis.*",
        "does network I/O, which is repeated on every replay and not retried durably",
        _TASK,
    ),
    _rule(
        "subprocess.* os.system os.popen os.spawn* os.exec* os.fork os.kill asyncio.create_subprocess_exec "
        "asyncio.create_subprocess_shell asyncio.subprocess.*",
        "runs another process, again on every replay",
        _TASK,
    ),
    _rule(
        "threading.* _thread.* concurrent.futures.* multiprocessing.* asyncio.to_thread asyncio.threads.to_thread "
        "anyio.to_thread.* *.run_in_executor",
        "runs code on another thread or process, outside the workflow's recorded steps",
        f"{_TASK} (a plain `def` task already runs in a worker thread)",
    ),
)

# Implementation modules -> the public name users know them by.
_ALIASES = {
    "posix": "os",
    "nt": "os",
    "posixpath": "os.path",
    "ntpath": "os.path",
    "genericpath": "os.path",
    "_io": "io",
    "_random": "random",
    "_socket": "socket",
    "pathlib._local": "pathlib",
}


@dataclass(frozen=True, slots=True)
class Finding:
    """One call that breaks replay: where, inside which workflow (and helper), what, and the fix."""

    file: str
    line: int
    column: int
    workflow: str
    function: str
    call: str
    what: str
    fix: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        inside = f"workflow {self.workflow}"
        if self.function.rsplit(".", 1)[-1] != self.workflow.split("@", 1)[0]:
            inside += f", in {self.function}"
        return f"{where}: {self.call} {self.what}; fix: {self.fix} [{inside}]"


def workflows_in(module: ModuleType) -> list[Workflow[Any, Any]]:
    """The workflows at the module's top level, as a dispatcher given this module would register them."""
    found: dict[int, Workflow[Any, Any]] = {}
    for value in vars(module).values():
        if isinstance(value, Workflow):
            found.setdefault(id(value), value)
    return list(found.values())


def check_module(module: ModuleType) -> list[Finding]:
    """Every finding in the module's workflows (and the helpers they call), by file and line."""
    findings = [finding for wf in workflows_in(module) for finding in check_workflow(wf)]
    return sorted(set(findings), key=lambda f: (f.file, f.line, f.column, f.call))


def check_workflow(wf: Workflow[Any, Any]) -> list[Finding]:
    """The findings of one workflow's function and of the same-module helpers it calls."""
    label = f"{wf.name}@{wf.version}"
    findings: list[Finding] = []
    seen: set[int] = set()
    pending: list[Callable[..., Any]] = [wf.fn]
    module = getattr(wf.fn, "__module__", None)
    while pending:
        fn = pending.pop()
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        analysis = _Analysis(fn, label, module)
        findings += analysis.run()
        pending += analysis.helpers
    # One finding per line and kind: `threading.Thread(...).start()` is one problem, not two.
    best: dict[tuple[str, int, str], Finding] = {}
    for finding in findings:
        key = (finding.file, finding.line, finding.what)
        if key not in best or len(finding.call) < len(best[key].call):
            best[key] = finding
    return list(best.values())


def _qualified(obj: object) -> str | None:
    """The dotted name an object is known by (``time.time``, ``datetime.datetime.now``, ...)."""
    if isinstance(obj, ModuleType):
        return _normal(obj.__name__)
    owner = getattr(obj, "__self__", None)
    name = getattr(obj, "__name__", None)
    if owner is not None and not isinstance(owner, ModuleType) and callable(obj) and isinstance(name, str):
        base = _qualified(owner if isinstance(owner, type) else type(owner))
        return f"{base}.{name}" if base else None
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if isinstance(module, str) and isinstance(qualname, str):
        return _normal(f"{module}.{qualname}")
    kind = type(obj)
    return _normal(f"{kind.__module__}.{kind.__qualname__}")


def _normal(dotted: str) -> str:
    for private, public in _ALIASES.items():
        if dotted == private or dotted.startswith(private + "."):
            return public + dotted[len(private) :]
    return dotted


def _matches(pattern: str, dotted: str) -> bool:
    if pattern.startswith("*."):
        return dotted.endswith(pattern[1:])
    if pattern.endswith("*"):
        return dotted.startswith(pattern[:-1]) and dotted != pattern[:-2]
    return dotted == pattern


def _rule_for(names: set[str]) -> Rule | None:
    for rule in RULES:
        if any(_matches(pattern, name) for pattern in rule.names for name in names):
            return rule
    return None


def _chain(node: ast.expr) -> tuple[str, list[str]] | None:
    """``a.b.c`` -> ("a", ["b", "c"]); None when the chain does not start at a plain name."""
    attrs: list[str] = []
    while isinstance(node, ast.Attribute):
        attrs.append(node.attr)
        node = node.value
    return (node.id, attrs[::-1]) if isinstance(node, ast.Name) else None


class _Analysis:
    """One function's source, walked once; ``helpers`` collects same-module functions it calls."""

    def __init__(self, fn: Callable[..., Any], workflow: str, module: str | None) -> None:
        self.fn = fn
        self.workflow = workflow
        self.module = module
        self.function = getattr(fn, "__qualname__", repr(fn))
        self.globals: dict[str, Any] = dict(getattr(fn, "__globals__", {}))
        with suppress(TypeError, ValueError):  # builtins and odd callables have no closure to read
            self.globals.update(inspect.getclosurevars(fn).nonlocals)
        self.local_imports: dict[str, str] = {}
        self.local_names: set[str] = set()
        self.helpers: list[Callable[..., Any]] = []

    def run(self) -> list[Finding]:
        try:
            lines, start = inspect.getsourcelines(self.fn)
            self.file = _display_path(inspect.getsourcefile(self.fn) or "<unknown>")
            tree = ast.parse(textwrap.dedent("".join(lines)))
        except (OSError, TypeError, SyntaxError) as exc:
            return [self._unreadable(exc)]
        self.offset = max(start, 1) - 1
        self._collect_bindings(tree)
        return list(self._findings(tree))

    def _unreadable(self, exc: Exception) -> Finding:
        what = f"could not be read ({exc}), so it was not checked"
        return Finding("<unknown>", 0, 0, self.workflow, self.function, self.function, what, "keep it in a .py file")

    def _collect_bindings(self, tree: ast.AST) -> None:
        """Local imports (followed) and other local names (which shadow globals: not resolved)."""
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    top = alias.name.split(".")[0]
                    self.local_imports[alias.asname or top] = alias.name if alias.asname else top
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    self.local_imports[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
                self.local_names.add(node.id)
            elif isinstance(node, ast.arg):
                self.local_names.add(node.arg)
            elif (
                isinstance(node, ast.ExceptHandler | ast.FunctionDef | ast.AsyncFunctionDef)
                and node.name
                and node is not _top(tree)
            ):
                self.local_names.add(node.name)

    def _resolve(self, node: ast.expr) -> tuple[set[str], object] | None:
        """The dotted names an expression may refer to (as written, and as found), and the object."""
        chain = _chain(node)
        if chain is None:
            return self._resolve_method_of_instance(node)
        root, attrs = chain
        if root in self.local_imports:
            dotted = _normal(".".join([self.local_imports[root], *attrs]))
            return {dotted}, _MISSING
        if root in self.local_names:
            return {".".join(["?", *attrs])}, _MISSING  # a local value: only `*.method` rules can apply
        if root in self.globals:
            obj = self.globals[root]
        elif hasattr(builtins, root):
            obj = getattr(builtins, root)
        else:
            return {".".join(["?", *attrs])}, _MISSING
        base = _qualified(obj)
        names = {".".join([base, *attrs])} if base else set()
        if isinstance(obj, ModuleType):
            names.add(".".join([_normal(obj.__name__), *attrs]))
        target: object = obj
        for attr in attrs:
            try:
                target = getattr(target, attr)
            except Exception:
                return names, _MISSING
        found = _qualified(target)
        if found:
            names.add(found)
        return names, target

    def _resolve_method_of_instance(self, node: ast.expr) -> tuple[set[str], object] | None:
        """``Path("x").read_text()``: a method called on a fresh instance of a resolvable class."""
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Call):
            inner = self._resolve(node.value.func)
            if inner is not None and isinstance(inner[1], type):
                return {f"{name}.{node.attr}" for name in inner[0]}, _MISSING
            return {f"?.{node.attr}"}, _MISSING
        return None

    def _findings(self, tree: ast.AST) -> Iterator[Finding]:
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            resolved = self._resolve(node.func)
            if resolved is not None:
                names, target = resolved
                rule = _rule_for(names)
                arguments = len(node.args) + len(node.keywords)
                if rule is not None and (rule.max_args is None or arguments <= rule.max_args):
                    yield self._finding(node, node.func, rule, called=True)
                elif rule is None:
                    self._maybe_helper(target)
            for argument in node.args:  # callables handed to an executor: to_thread(time.sleep, 1)
                passed = self._resolve(argument) if isinstance(argument, ast.Name | ast.Attribute) else None
                if passed is not None and callable(passed[1]) and not isinstance(passed[1], type):
                    rule = _rule_for(passed[0])
                    if rule is not None and rule.max_args is None:
                        yield self._finding(argument, argument, rule, called=False)

    def _maybe_helper(self, target: object) -> None:
        if inspect.isfunction(target) and target.__module__ == self.module:
            self.helpers.append(target)

    def _finding(self, node: ast.expr, expression: ast.expr, rule: Rule, *, called: bool) -> Finding:
        return Finding(
            file=self.file,
            line=node.lineno + self.offset,
            column=node.col_offset + 1,
            workflow=self.workflow,
            function=self.function,
            call=ast.unparse(expression) + ("()" if called else ""),
            what=rule.what,
            fix=rule.fix,
        )


_MISSING = object()


def _top(tree: ast.AST) -> ast.AST | None:
    body = getattr(tree, "body", [])
    return body[0] if body else None


def _display_path(path: str) -> str:
    """A path relative to the current directory when it is below it (shorter, clickable in editors)."""
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return path
    return path if relative.startswith("..") else relative
