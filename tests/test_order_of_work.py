"""Under a backlog, work of workflows that already started goes first (issue: work in progress waited behind
every new start). 4,000 single-task workflows are started while no dispatcher runs; then one starts."""

from __future__ import annotations

import asyncio
import statistics

import limits_app
from support import InProcessRoles

from bdurable import Client, Status


async def test_workflows_started_first_finish_first_under_a_backlog(client: Client, roles: InProcessRoles) -> None:
    count = 4_000
    ids = [f"backlog-{i:05d}" for i in range(count)]
    for chunk in range(0, count, 500):  # started in order, while no dispatcher runs
        await asyncio.gather(
            *(
                client.start(limits_app.one_task, i, workflow_id=w)
                for i, w in enumerate(ids[chunk : chunk + 500], chunk)
            )
        )
    began = await client.reads.now_ms()
    roles.dispatcher(limits_app, concurrency=50)

    async def all_done() -> bool:
        return (await client.reads.counts())[Status.COMPLETED] == count

    deadline = asyncio.get_running_loop().time() + 120
    while not await all_done():
        assert asyncio.get_running_loop().time() < deadline, "the backlog did not drain"
        await asyncio.sleep(0.2)
    finished: dict[str, int] = {}
    for chunk in range(0, count, 500):
        async with client.store.redis.pipeline(transaction=False) as pipe:
            for workflow_id in ids[chunk : chunk + 500]:
                pipe.hget(client.keys.for_workflow(workflow_id).wf(workflow_id), "finished_at")
            for workflow_id, at in zip(ids[chunk : chunk + 500], await pipe.execute(), strict=True):
                finished[workflow_id] = int(at) - began
    first = statistics.median(finished[w] for w in ids[:200])
    last = statistics.median(finished[w] for w in ids[-200:])
    print(f"median finish after the dispatcher started: first 200 {first} ms, last 200 {last} ms")
    assert first < last / 2, (first, last)
