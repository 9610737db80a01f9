"""The Redis key schema: every key and channel name b-durable uses, in one place.

Keys of one shard share the hash tag ``{<prefix>:<shard>}``: everything one atomic script touches (a
workflow's hashes and lists, its shard's queues, timers and indexes) lies in one Redis Cluster slot. The few
fleet-wide keys (dispatcher registrations, the workflow registry) use the tag ``{<prefix>}``. Every key and
channel starts with the prefix's tag, so two prefixes on one Redis never see each other.

Layout, with ``T = {prefix:shard}`` and ``G = {prefix}``::

    T:wf:<id>                 hash   status, name, version, input, output, error, step, lease, ...
    T:wf:<id>:calls           hash   seq -> call record (JSON); seq:s -> status; seq:f -> finished ms
    T:wf:<id>:inbox           list   results delivered to the workflow, in arrival order (replay input)
    T:task:<id>:<seq>         hash   a task call: name, args, attempt, options, lease
    T:q:<queue>:<task>        list   ready calls of one task
    T:wq:<queue>:<name>@<v>   list   ready workflow steps of one workflow version
    T:wake:<ready list>       list   wake-up token for dispatchers blocked on that ready list
    T:proc:<worker>           hash   item -> lease of what a dispatcher holds (the reliable-queue list)
    T:holds:<worker>          set    the ready lists a dispatcher listens to (its commits hand off from them)
    T:timers                  zset   timer member -> due time (ms, Redis clock)
    T:live:<name>             zset   "<version>|<worker>" -> lease expiry (ms): who can run this workflow
    T:wqueues                 set    every workflow-step ready list (for the version sweep)
    T:idx:s:<STATUS>          zset   workflow id -> created ms, for listing (one index per status)
    T:idx:expire              zset   finished workflow id -> expiry ms (retention)
    T:dlq / T:dlq:<entry>     zset / hash  dead-letter entries
    G:workers                 zset   worker -> heartbeat expiry (ms)
    G:worker:<id>             hash   what a dispatcher runs (for operators and the reaper)
    G:registry                hash   "<name>@<version>" -> JSON (queue, input schema, registered ms)
    G:versions:<name>         zset   version -> registered ms
    channel G:timers          a hint that an earlier timer was added (the scheduler sleeps until it)
    channel G:wf:<id>         status changes and completion of one workflow
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

__all__ = ["Keys", "ShardKeys", "parse_item", "step_item", "task_item"]


def step_item(workflow_id: str) -> str:
    """The ready-list item that asks for one step of a workflow."""
    return f"w|{workflow_id}"


def task_item(workflow_id: str, seq: int) -> str:
    """The ready-list item of one task call."""
    return f"t|{workflow_id}|{seq}"


def parse_item(item: str) -> tuple[str, str, int]:
    """Split an item into ``(kind, workflow_id, seq)``; ``seq`` is 0 for workflow steps."""
    kind, _, rest = item.partition("|")
    if kind == "t":
        workflow_id, _, seq = rest.rpartition("|")
        return kind, workflow_id, int(seq)
    return kind, rest, 0


@dataclass(frozen=True, slots=True)
class ShardKeys:
    """Keys of one shard; all share one hash tag."""

    tag: str

    def wf(self, workflow_id: str) -> str:
        return f"{self.tag}:wf:{workflow_id}"

    def calls(self, workflow_id: str) -> str:
        return f"{self.tag}:wf:{workflow_id}:calls"

    def inbox(self, workflow_id: str) -> str:
        return f"{self.tag}:wf:{workflow_id}:inbox"

    def signals(self, workflow_id: str) -> str:
        return f"{self.tag}:wf:{workflow_id}:signals"

    def task(self, workflow_id: str, seq: int) -> str:
        return f"{self.tag}:task:{workflow_id}:{seq}"

    def task_queue(self, queue: str, task: str) -> str:
        """Ready calls of one task on one queue: a dispatcher only listens for tasks it has."""
        return f"{self.tag}:q:{queue}:{task}"

    def step_queue(self, queue: str, name: str, version: str) -> str:
        return f"{self.tag}:wq:{queue}:{name}@{version}"

    def wake(self, ready_list: str) -> str:
        return f"{self.tag}:wake:{ready_list}"

    def processing(self, worker_id: str) -> str:
        return f"{self.tag}:proc:{worker_id}"

    def holds(self, worker_id: str) -> str:
        return f"{self.tag}:holds:{worker_id}"

    @property
    def timers(self) -> str:
        return f"{self.tag}:timers"

    def live(self, name: str) -> str:
        return f"{self.tag}:live:{name}"

    @property
    def step_queues(self) -> str:
        return f"{self.tag}:wqueues"

    def index_status(self, status: str) -> str:
        return f"{self.tag}:idx:s:{status}"

    @property
    def index_expire(self) -> str:
        return f"{self.tag}:idx:expire"

    @property
    def dlq(self) -> str:
        return f"{self.tag}:dlq"

    def dlq_entry(self, entry_id: str) -> str:
        return f"{self.tag}:dlq:{entry_id}"

    @property
    def sequence(self) -> str:
        """A counter for lease tokens and dead-letter entry ids."""
        return f"{self.tag}:seq"


@dataclass(frozen=True, slots=True)
class Keys:
    """The whole key schema for one prefix."""

    prefix: str
    shards: int = 1

    def shard_of(self, workflow_id: str) -> int:
        """The shard a workflow lives in: a stable hash of its id."""
        if self.shards == 1:
            return 0
        return zlib.crc32(workflow_id.encode()) % self.shards

    def shard(self, index: int) -> ShardKeys:
        return ShardKeys(f"{{{self.prefix}:{index}}}")

    def for_workflow(self, workflow_id: str) -> ShardKeys:
        return self.shard(self.shard_of(workflow_id))

    def all_shards(self) -> list[ShardKeys]:
        return [self.shard(i) for i in range(self.shards)]

    @property
    def _global(self) -> str:
        return f"{{{self.prefix}}}"

    @property
    def workers(self) -> str:
        return f"{self._global}:workers"

    def worker(self, worker_id: str) -> str:
        return f"{self._global}:worker:{worker_id}"

    @property
    def registry(self) -> str:
        return f"{self._global}:registry"

    def versions(self, name: str) -> str:
        return f"{self._global}:versions:{name}"

    @property
    def timers_channel(self) -> str:
        return f"{self._global}:timers"

    def workflow_channel(self, workflow_id: str) -> str:
        return f"{self._global}:wf:{workflow_id}"
