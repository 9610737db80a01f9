"""Flow control's cost: ``python bench/bench_flow.py`` prints a small table.

Three drains of queued three-task workflows by one dispatcher process (concurrency 200) against a local
Redis (AOF ``everysec``), each the median of ``--repeat`` interleaved rounds:

* unlimited tasks: the path every task without a limit takes (the figure to compare with earlier releases:
  ``docs/performance.md``, "3-task workflows");
* the same tasks with a ``concurrency`` limit that never binds (100,000): what a limit's bookkeeping costs
  (a permit taken and released per attempt, in the claim and commit scripts);
* a limit of 5 at once that binds: throughput under the limit (each freed permit wakes the next held call).

Redis commands per item (claims and commits, read from Redis's own counters) show where the cost goes.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_app
from harness import redis
from run import drain, settings_for

CASES = (
    ("unlimited", bench_app.three_tasks),
    ("limit, never binding", bench_app.three_limited_tasks),
    ("limit of 5, binding", bench_app.three_capped_tasks),
)


async def main(count: int, repeat: int, concurrency: int) -> None:
    runs: dict[str, list[dict[str, float]]] = {name: [] for name, _ in CASES}
    with redis() as server:
        for round_ in range(repeat):
            for name, workflow in CASES:
                settings = settings_for(server.url)
                print(f"round {round_ + 1}: {name}", flush=True)
                runs[name].append(await drain(settings, [server.url], workflow, 3, count, concurrency))
    base = statistics.median(r["per_s"] for r in runs["unlimited"])
    print(f"\n{count} three-task workflows, median of {repeat} rounds\n")
    print(f"{'case':<24}{'workflows/s':>12}{'vs unlimited':>14}{'commands/item':>15}{'script µs':>11}")
    for name, _ in CASES:
        figures: dict[str, Any] = {
            key: statistics.median(r[key] for r in runs[name])
            for key in ("per_s", "commands_per_item", "usec_per_script")
        }
        change = figures["per_s"] / base - 1
        print(
            f"{name:<24}{figures['per_s']:>12.0f}{change:>+14.1%}"
            f"{figures['commands_per_item']:>15.2f}{figures['usec_per_script']:>11.0f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1500, help="workflows per drain")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--concurrency", type=int, default=200, help="dispatcher concurrency")
    args = parser.parse_args()
    asyncio.run(main(args.count, args.repeat, args.concurrency))
