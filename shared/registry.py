"""What one dispatcher can run: the workflows and tasks found in its ``--app`` modules.

Code is only ever found here, by registered name: nothing read from Redis names a module to import.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from bdurable.task import Task
from bdurable.workflow import Workflow

__all__ = ["Registry"]


@dataclass
class Registry:
    workflows: dict[tuple[str, str], Workflow[Any, Any]] = field(default_factory=dict)
    tasks: dict[str, Task[Any, Any]] = field(default_factory=dict)

    @classmethod
    def from_modules(cls, modules: Iterable[str | ModuleType]) -> Registry:
        """Import each module and register every workflow and task defined at its top level."""
        registry = cls()
        for module in modules:
            loaded = importlib.import_module(module) if isinstance(module, str) else module
            for value in vars(loaded).values():
                registry.add(value)
        return registry

    def add(self, value: object) -> None:
        if isinstance(value, Workflow):
            key = (value.name, value.version)
            existing = self.workflows.get(key)
            if existing is not None and existing.fn is not value.fn:
                raise ValueError(f"two different workflows are registered as {value.name}@{value.version}")
            self.workflows[key] = value
        elif isinstance(value, Task):
            existing_task = self.tasks.get(value.name)
            if existing_task is not None and existing_task.fn is not value.fn:
                raise ValueError(f"two different tasks are registered as {value.name!r}")
            self.tasks[value.name] = value

    def workflow(self, name: str, version: str) -> Workflow[Any, Any] | None:
        return self.workflows.get((name, version))

    def task(self, name: str) -> Task[Any, Any] | None:
        return self.tasks.get(name)

    def queues(self) -> set[str]:
        return {w.queue for w in self.workflows.values()} | {t.queue for t in self.tasks.values()}
