"""pytest fixtures for testing workflows, loaded as the pytest plugin ``bdurable`` when b-durable is installed.

* ``workflow_env``: a :class:`~bdurable.testing.WorkflowEnvironment` with time skipping running the modules of
  ``bdurable_apps``, on a fresh key prefix of the session's Redis; ``workflow_env.client`` is its client.
* ``bdurable_apps``: override it (in a ``conftest.py`` or a test module) to name your workflow modules.
* ``bdurable_redis_url`` (session): an embedded server started once for the session, or
  ``BDURABLE_TEST_REDIS_URL`` when set.

``workflow_env`` is an async fixture: it needs an async test plugin, pytest-asyncio (with
``asyncio_mode = "auto"``) or anyio's (tests marked ``@pytest.mark.anyio``). Disable the plugin with
``-p no:bdurable``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from types import ModuleType

import pytest

from bdurable.embedded import RedisServer
from bdurable.testing.environment import WorkflowEnvironment

__all__ = ["bdurable_apps", "bdurable_redis_url", "workflow_env"]


@pytest.fixture(scope="session")
def bdurable_redis_url() -> Iterator[str]:
    """A Redis for the session's environments (each uses its own key prefix)."""
    given = os.environ.get("BDURABLE_TEST_REDIS_URL")
    if given:
        yield given
        return
    with RedisServer(appendonly=False) as server:
        yield server.url


@pytest.fixture
def bdurable_apps() -> list[str | ModuleType]:
    """The modules whose workflows and tasks ``workflow_env`` runs: override this fixture."""
    return []


@pytest.fixture
async def workflow_env(
    bdurable_apps: list[str | ModuleType], bdurable_redis_url: str
) -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping environment running ``bdurable_apps``, stopped after the test."""
    async with WorkflowEnvironment(bdurable_apps, redis_url=bdurable_redis_url, time_skipping=True) as env:
        yield env
