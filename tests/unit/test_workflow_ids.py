"""Workflow ids made by ``start_many``: drawn in one call to the OS, yet each the hex of a version-4 UUID, as
``client.start`` makes them (``uuid.uuid4().hex``), and never two alike."""

from __future__ import annotations

import uuid

from bdurable.client import new_workflow_ids, validate_workflow_id


def test_ids_are_distinct_version_4_uuids_in_hex() -> None:
    ids = new_workflow_ids(10_000)
    assert len(ids) == 10_000
    assert len(set(ids)) == 10_000
    for workflow_id in ids:
        parsed = uuid.UUID(hex=workflow_id)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert parsed.hex == workflow_id
        assert validate_workflow_id(workflow_id) == workflow_id


def test_no_ids_for_no_workflows() -> None:
    assert new_workflow_ids(0) == []
