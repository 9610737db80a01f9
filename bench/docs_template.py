"""Render docs/performance.md from one run of bench/run.py (the figures, the machine, the profile)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

HOW = """\
## How each figure is measured

All in one run of `python bench/run.py` (about 5 minutes here; `--quick` for a smaller smoke run,
`--only SECTION,...` to rerun parts without writing this file, `--repeat N` rounds of the throughput
drains, 3 by default, whose median is shown; `--before REV`: the *before* column from the `docs/performance.md`
of a git revision, here the first round's). Redis is a local `redis-server` with AOF `appendfsync everysec`
(the cluster: three such masters). Roles run as separate processes (multiprocessing spawn) logging JSON
at `warning` to `bench/results/logs/`; the peers' worker is a separate process too.

- **Limits.** redis-py asyncio in the benchmark's own process: sequential `PING`s; 64 coroutines each
  sending `PING`s (connections opened before timing); pipelines of 32 `PING`s. The server: `redis-benchmark
  -c 50` sending `EVALSHA` of a one-`INCR` script, unpipelined and with `-P 32` (its C client shares the 2
  cores with Redis).
- **Throughput.** One worker process (b-durable: one dispatcher plus a scheduler) is started and warmed
  up, then paused with SIGSTOP while N workflows (or N no-op saq/arq jobs) are queued, then resumed; the
  clock runs from the resumption until the last one is done (polled every 10 ms). A grown AOF is rewritten
  before each drain, so that no automatic rewrite (a forked child) lands inside one. Workflows are started
  by definition (`client.start(one_task, n)`), which needs no version lookup. saq 0.26 and arq 0.28 run
  in their own venv (`bench/.peers-venv`, created by the script with pip from PyPI); saq at concurrency 10,
  100 and the dispatcher's in every round, compared at its best; arq at the dispatcher's concurrency, its poll
  delay lowered to 10 ms. DBOS is not measured: its figures
  are the issue's (PostgreSQL, same kind of machine), a labelled reference.
- **Round trips and commands** come from Redis's own counters over the drain: `total_reads_processed`
  (one socket read per request: a pipeline of many commands is one round trip) and `INFO commandstats`
  (client commands = commands that no b-durable script ever runs: `FCALL`, `BLPOP`, `SUBSCRIBE`...;
  "inside scripts" = the rest). Divided by the items drained: a workflow with k tasks is k+1 workflow
  steps and k task attempts, each one a claim and a commit. The benchmark's own polls are subtracted.
- **CPU.** Redis: `INFO cpu` (`used_cpu_sys + used_cpu_user`) delta over the wall time, summed over the
  cluster's nodes. Dispatchers: `/proc/PID/stat`. Machine: `/proc/stat`, busy share of all cores.
- **Latency.** One workflow at a time on an otherwise idle system: `client.start(definition)` then
  `handle.result()`; saq: enqueue then wait for the job's completion message (saq's pub/sub, subscribed
  first); three rounds of 200 samples each, ours and saq's interleaved, the median round of each. Timers: a
  workflow sleeping 20 ms, the lag between the timer's due time and its firing, from the call record's
  timestamps (Redis clock, 1 ms resolution). What a hop costs when the machine was idle: a `PING` round trip
  (p50) and a small script's time inside Redis (`INFO commandstats`), back to back and each after 10 ms of
  sleep (the limits table).
- **Replay cost.** One `long_chain` workflow (a task per step): the mean time per step+task between
  steps 10 and 10+W and around step 1,000, from the calls' recorded start times. Cold: the same chain
  then a 6 s sleep, during which the dispatcher is stopped and a new one started: the first step after the
  timer replays the whole history (loaded with the claim) on a dispatcher that never saw the workflow.
- **Memory.** `INFO memory used_memory` before and after 10,000 workflows parked in a one-hour sleep
  (input: one small integer; ids: 32-hex uuids), divided. Retention: 5,000 finished workflows with a 1 s
  retention, memory and the number of keys of the prefix once the scheduler expired them, against the
  same figures just before they started.
- **Scale.** The 3-task drain with 1, 2 and 4 dispatcher processes on one Redis, then on a 3-master
  cluster (`redis+cluster://`, 12 shards). Everything (Redis nodes, dispatchers, the scheduler, the
  benchmark) shares the machine's cores.
- **Accelerators.** The 1-task drain again, with the roles on `BDURABLE_EVENT_LOOP=asyncio` and `=uvloop`,
  on asyncio with JSON written and read by the standard library instead of pydantic-core (the benchmark
  sets `bdurable.codec.ACCELERATED = False` in the dispatcher process), and on asyncio with the role
  processes' heap not settled (CPython's own collector settings, nothing frozen: see
  `bdurable.runtime.heap`), in interleaved rounds (median shown). Each note gives the dispatcher's CPU per
  workflow and its garbage collector's time (timed with `gc.callbacks` in the role process, over its life: start,
  warm-up, drain and stop, divided by the workflows it ran) with the longest pause.
- **Starts.** `bench/bench_starts.py`: 5,000 `client.start` calls one after the other, then one `start_many`
  of 5,000 inputs, each on a fresh prefix and client after one warm-up start, median of 3 rounds; no
  dispatcher runs.
- **Events.** `bench/bench_bus.py`: `send_event` to the next task's start; events applied per second; then one
  keyed publish to 10,000 waiting workflows with the dispatchers stopped (only the bus works): its duration,
  and every command that ran longer than 1 ms meanwhile (Redis `SLOWLOG`), which is what any other client
  waits behind; a client pinging meanwhile is reported too (timed in Python, on cores the bus keeps busy).
- **Dispatcher memory.** `bench/bench_memory.py`: one dispatcher process holding 10,000 runs in its cache
  (workflows parked in an event wait, payloads of 100 B and of 100 KiB), resident memory from `/proc` before and
  after, and the bytes the cache counted against `BDURABLE_RUN_CACHE_BYTES` (its `/metrics`).
- **Profile.** One dispatcher under cProfile draining 3-task workflows (slower than unprofiled: only the
  shares matter). Time blocked in `epoll` (waiting for Redis) is left out of the shares and reported apart.
- **The idle chain, hop by hop.** `bench/bench_latency_chain.py` (run by hand; not part of these tables): the
  idle latency run again with a dispatcher whose claims and commits note the wall-clock time they happen (its
  task notes when its code runs), and Redis's slow log timing every script call; it prints the median of each
  hop (the start's script and the wake-up up to the claim, the dispatcher's Python, each commit's round trip,
  the result's way back to the client), which is where the idle p50 goes.
"""


def idle_penalty_text(limits: dict[str, float]) -> str:
    """What a hop costs on a quiet system, from the limits section (empty when it was not measured)."""
    if "round_trip_ms_idle" not in limits:
        return ""
    return (
        f" On a quiet system every hop pays for waking what slept: on this machine a round trip after 10 ms "
        f"of idleness took {limits['round_trip_ms_idle']:.2f} ms against {limits['round_trip_ms_warm']:.2f} ms "
        f"back to back, and a small script {limits['script_us_idle']:.0f} us in Redis against "
        f"{limits['script_us_warm']:.0f} (the limits table). Each hop of the chain pays it: "
        "the latency is the hop count times that, not a loaded system's cost per item."
    )


def previous_figures(text: str) -> tuple[str, dict[str, str]]:
    """The figures of an earlier docs/performance.md (its date, and measure -> value), so that each figure is
    shown next to the one before it and nothing measured before disappears unseen."""
    if not text:
        return "", {}
    date = re.search(r"on (\d{4}-\d{2}-\d{2})", text)
    figures: dict[str, str] = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) >= 5 and cells[0] not in ("measure", "---"):
            figures.setdefault(cells[0], cells[1])
    return (date.group(1) if date else "?"), figures


def table(rows: list[Any], before: dict[str, str]) -> list[str]:
    lines = ["| measure | value | before | against | verdict | notes |", "| --- | ---: | ---: | --- | --- | --- |"]
    for r in rows:
        note = r.note.replace("|", "/")
        verdict = "**" + r.verdict + "**" if r.verdict else ""
        lines.append(f"| {r.name} | {r.value} | {before.get(r.name, '')} | {r.versus} | {verdict} | {note} |")
    return lines


def render(report: Any, args: Any, host: dict[str, str], previous: tuple[str, dict[str, str]]) -> str:
    extra = report.extra
    previous_date, before = previous
    out: list[str] = [
        "# Performance",
        "",
        f"Generated by `python bench/run.py` on {dt.date.today().isoformat()} (the run took "
        f"{extra['seconds']:.0f} s). Do not edit by hand: the text lives in `bench/docs_template.py`.",
        "",
        "## The machine",
        "",
        "| | |",
        "| --- | --- |",
        f"| cores (nproc) | {host['nproc']} |",
        f"| CPU | {host['cpu']} |",
        f"| Python | {host['python']} |",
        f"| redis-py | {host['redis-py']} (with hiredis) |",
        f"| Redis | {host['redis-server']}, AOF everysec |",
        f"| kernel | {host['kernel']} |",
        f"| load average (1 min) at the start / end of the run | {extra.get('load_start', '?')} / {host['load']} "
        "(the bench alone keeps it near 1-2; more means other work shared the cores) |",
    ]
    versions = extra.get("peer_versions")
    if versions:
        out.append(f"| peers (own venv) | saq {versions['saq']}, arq {versions['arq']}, redis-py {versions['redis']} |")
    out += [
        "",
        "## Figures",
        "",
        f"The column *before* repeats each figure of the previous `docs/performance.md` ({previous_date or 'none'});"
        " figures it had that this run no longer measures are listed after the tables.",
        "",
    ]
    for title, rows in report.sections:
        out += [f"### {title}", "", *table(rows, before), ""]
    measured = {r.name for _, rows in report.sections for r in rows}
    gone = [(name, value) for name, value in before.items() if name not in measured]
    if gone:
        out += [f"### Figures of {previous_date} not measured again", "", "| measure | value then |", "| --- | ---: |"]
        out += [f"| {name} | {value} |" for name, value in gone]
        out += [""]
    out += targets(extra)
    out += profile_section(extra)
    out += reading(extra)
    out += ["", HOW]
    return "\n".join(out).rstrip() + "\n"


def targets(extra: dict[str, Any]) -> list[str]:
    """The second round's targets (docs: the performance issue), each with its verdict; then the first round's."""
    one, three, saq = extra["one"], extra["three"], extra.get("saq")
    lat, saq_lat, lag = extra["latency"], extra.get("saq_latency"), extra["timer_lag"]
    rep, parked, kept = extra["replay"], extra["parked"], extra["retention"]

    def mark(ok: bool) -> str:
        return "holds" if ok else "**misses**"

    lines = ["## The targets", ""]
    if saq:
        ratio = one["per_s"] / saq["per_s"]
        lines.append(
            f"1. Throughput, one dispatcher: 1-task workflows at {ratio:.2f}x saq's no-op jobs (target >= 2x): "
            f"{mark(ratio >= 2)}. 3-task workflows at {three['per_s'] / 80:.1f}x DBOS's 80/s (quoted, not measured "
            f"here; target >= 12x): {mark(three['per_s'] >= 960)}."
        )
    if saq_lat:
        lines.append(
            f"2. Idle latency: 1-task start-to-result p50 {lat['p50_ms']:.2f} ms against saq's "
            f"{saq_lat['p50_ms']:.2f} ms (target <= saq): {mark(lat['p50_ms'] <= saq_lat['p50_ms'])}; p99 "
            f"{lat['p99_ms']:.2f} ms = {lat['p99_ms'] / lat['p50_ms']:.2f}x p50 (target <= 2x): "
            f"{mark(lat['p99_ms'] <= 2 * lat['p50_ms'])}."
        )
    scale = extra.get("scale") or []
    single = {n: f for where, n, f in scale if where == "one Redis"}
    clustered = {n: f for where, n, f in scale if where != "one Redis"}
    if 1 in single and 1 in clustered:
        share = clustered[1]["per_s"] / single[1]["per_s"]
        lines.append(
            f"3. Redis Cluster: one dispatcher on the 3-node cluster at {share:.1%} of its throughput on one Redis "
            f"(target >= 90%): {mark(share >= 0.9)}; 2 and 4 dispatchers: see the scale rows."
        )
    bus = {name: value for name, value, _ in extra.get("bus") or [] if isinstance(extra.get("bus"), list)}
    woken = next((v for k, v in bus.items() if k.startswith("bus: one keyed publish")), None)
    longest = next((v for k, v in bus.items() if k.startswith("bus: longest Redis command")), None)
    pinged = next((v for k, v in bus.items() if "PING during that publish" in k), None)
    if woken and longest:
        lines.append(
            f"4. A keyed publish waking {extra['counts'].get('bus_waiters', 'N')} waiters took {woken} ms; the "
            f"longest Redis command meanwhile ran {longest} ms (target: no other client waits more than 5 ms): "
            f"{mark(float(longest) <= 5)}. Another client's PINGs, timed in Python on the busy cores, waited "
            f"{pinged} ms (p99 / max)."
        )
    rss = extra.get("rss")
    if rss:
        parts = [f"{payload:,} B payloads {f['full']:,.0f} MiB (idle {f['idle']:.0f} MiB)" for payload, f in rss]
        lines.append(
            "5. Dispatcher memory: the run cache is bounded in bytes (`BDURABLE_RUN_CACHE_BYTES`, 256 MiB by "
            f"default); RSS with 10,000 runs cached: {'; '.join(parts)}: holds (reported)."
        )
    starts = extra.get("starts")
    if starts:
        ratio = starts["start_many"] / starts["one by one"]
        lines.append(
            f"6. Starts from one client: {starts['one by one']:,.0f}/s one by one, {starts['start_many']:,.0f}/s with "
            f"`start_many` = {ratio:.1f}x (target >= 10x): {mark(ratio >= 10)}."
        )
    lines.append(
        "7. Nothing regresses: every figure above stands next to the earlier one (column *before*); the "
        "command-count regression test (`tests/test_command_budget.py`) still guards the Redis commands per workflow."
    )
    worst = max(one["round_trips_per_item"], three["round_trips_per_item"])
    ratio = rep["far_ms"] / rep["near_ms"]
    lines += [
        "",
        "The first round's targets, kept:",
        "",
        f"- Round trips per durable step under load: {worst:.2f} (target <= 2): {mark(worst <= 2)}.",
        f"- Timers fire p99 {lag['p99_ms']:.0f} ms late (target <= 5 ms): {mark(lag['p99_ms'] <= 5)}.",
        f"- Replay: a step around step {int(rep['far_at'])} costs {ratio:.2f}x one around step 10 (target <= 2x): "
        f"{mark(ratio <= 2)}; a cold step (full replay of {int(rep['history'])} entries) {rep['cold_ms']:.0f} ms.",
        f"- Redis memory: {parked['per_workflow']:,.0f} B per parked workflow (target <= 1,024): "
        f"{mark(parked['per_workflow'] <= 1024)}; after retention {int(kept['left_keys'])} keys and "
        f"{int(kept['left_content']):,} B left: {mark(kept['left_keys'] <= 0 and kept['left_content'] <= 65536)}.",
    ]
    return [*lines, ""]


def profile_section(extra: dict[str, Any]) -> list[str]:
    profile, profiled, three = extra.get("profile"), extra.get("profiled"), extra["three"]
    if not profile:
        return []
    busy = profile["total_s"] / (profile["total_s"] + profile["idle_s"])
    lines = [
        "## Where a dispatcher's time goes",
        "",
        f"cProfile of one dispatcher draining 3-task workflows: {profile['us_per_item']:.0f} us of Python per "
        f"step or task attempt under the profiler; the process was busy {busy:.0%} of the profiled wall time and "
        f"blocked in epoll (waiting for Redis or for work) the rest. Unprofiled, the same drain used "
        f"{three['dispatcher_cpu']:.0%} of a core for the dispatcher and {three['redis_cpu']:.0%} of a core for "
        f"Redis, whose scripts averaged {three['usec_per_script']:.0f} us per call (INFO commandstats, "
        f"`FCALL` usec/calls) and kept it busy {three['lua_share']:.0%} of the wall time.",
        "",
        "| share of the dispatcher's busy time | where |",
        "| ---: | --- |",
    ]
    lines += [f"| {share:.1%} | {label} |" for share, label in profile["categories"]]
    lines += [
        "",
        "The functions with the most own time (share of busy time, us per step or task attempt):",
        "",
        "| share | us/item | function |",
        "| ---: | ---: | --- |",
    ]
    lines += [f"| {share:.1%} | {us:.1f} | `{name}` |" for share, us, name in profile["top"]]
    if profiled:
        lines += ["", f"(Under the profiler the drain ran at {profiled['per_s']:,.0f} workflows/s.)"]
    share = {label.split(":")[0].split(" (")[0]: value for value, label in profile["categories"]}

    def pct(prefix: str) -> str:
        return f"{sum(v for k, v in share.items() if k.startswith(prefix)):.0%}"

    lines += [
        "",
        f"In words: the replay itself (feeding results to the workflow code, the step loop) is only "
        f"{pct('replay')} of the dispatcher's busy time, and the workflow and task code next to nothing. The cost "
        f"is the machinery around each item: asyncio (a task per claimed item, another per task attempt, "
        f"`asyncio.timeout`, callbacks) {pct('asyncio')}, redis-py packing and sending commands "
        f"{pct('redis-py')} (plus {pct('socket')} in socket calls), JSON encoding and decoding {pct('JSON')}, "
        f"structlog's contextvars bound for every item even when nothing is logged {pct('structlog')}, "
        f"prometheus label lookups {pct('prometheus')}, the task's argument binding through `inspect` "
        f"{pct('task invocation')}, the dispatcher's own code (claims, slots, steps, attempts, commits) "
        f"{pct('dispatcher')}, and the typed wire to and from the scripts {pct('wire')}. On the Redis side "
        f"the Lua of claims and commits costs {three['usec_per_script']:.0f} us per script call with "
        f"{three['inner_commands_per_item']:.0f} commands run inside scripts per step or task attempt.",
    ]
    return [*lines, ""]


def reading(extra: dict[str, Any]) -> list[str]:
    one, three, saq = extra["one"], extra["three"], extra.get("saq")
    lat, saq_lat = extra["latency"], extra.get("saq_latency")
    limits = extra.get("limits", {})
    lines = ["## Reading the figures", ""]
    items = three["items_per_s"]
    python_us = three["dispatcher_cpu"] / items * 1e6
    redis_us = three["redis_cpu"] / items * 1e6
    lines.append(
        f"- **One dispatcher: Python and Lua take turns.** Under load a dispatcher needs "
        f"{three['round_trips_per_item']:.2f} round trips per step or task attempt (claims take up to 64 items, "
        f"concurrent commits share one pipeline), so {items:,.0f} items/s need only "
        f"~{items * three['round_trips_per_item']:,.0f} round trips/s, far below the "
        f"{limits.get('sequential', float('nan')):,.0f}/s of sequential round trips: round trips are not the "
        f"limit. Neither process is saturated either (dispatcher {three['dispatcher_cpu']:.0%} of a core, "
        f"Redis {three['redis_cpu']:.0%}, machine {three['machine_cpu']:.0%} of all cores): they mostly take "
        f"turns. The dispatcher sends a pipeline of claims and commits and waits while Redis runs the scripts "
        f"({three['usec_per_script']:.0f} us per call, {three['inner_commands_per_item']:.0f} commands inside "
        f"scripts per item), then Redis idles while the dispatcher handles the replies. Per step or task "
        f"attempt that is ~{python_us:.0f} us of dispatcher CPU plus ~{redis_us:.0f} us of Redis CPU; strictly "
        f"one after the other they would allow {1e6 / (python_us + redis_us):,.0f} items/s, and the drain did "
        f"{items:,.0f}. The store already hands a pipeline's replies back 32 callers at a time, so that their "
        f"next calls reach Redis while the rest are handled (some overlap; measured ~10%). Throughput grows by "
        f"cutting the Python per item (the profile below: asyncio task and timeout machinery, redis-py, JSON, "
        f"structlog contextvars, argument binding), the Lua per item (commands run inside the claim and commit "
        f"scripts), or by more overlap of the two."
    )
    if saq:
        lines.append(
            f"- **Against saq.** saq needs ~{saq['round_trips_per_job']:.0f} round trips per job (BLMOVE, GET, SET "
            f"status + PUBLISH, a finish pipeline + PUBLISH) and its single worker process is CPU-bound "
            f"({saq['worker_cpu']:.0%} of a core). A 1-task b-durable workflow is 3 durable items (step, task, step) "
            f"at {one['round_trips_per_item']:.2f} round trips each, every one persisted with its history, where a "
            f"saq job is one; the step after the task runs on the dispatcher's copy of the run and commits with "
            f"the task (2 commits, not 3). {one['per_s'] / saq['per_s']:.2f}x saq is what the batching and that "
            f"buy"
            + (
                ". The 2x target needs the per-item costs above to shrink by about "
                f"{2 * saq['per_s'] / one['per_s']:.1f}x: the Python per item first (the profile below), since "
                "neither process is saturated and Redis waits on the dispatcher as much as the reverse."
                if one["per_s"] < 2 * saq["per_s"]
                else "."
            )
        )
    lines.append(
        "- **The scripts as one Redis Function library.** Each transition used to be sent with the whole library "
        "(the key helpers and `lib.lua`, ~150 functions) and Lua re-created every one of them on every call, then "
        "collected them; with 25 copies of the library in Redis's Lua heap, a call cost 150-200 us of Redis time "
        "once the library had grown with schedules, limits and payload protection. Loaded once as a Function "
        "library (`FCALL`), a call runs only its own script: a trivial one costs ~6 us instead of 30-50, and the "
        f"claims and commits of the 3-task drain {three['usec_per_script']:.0f} us on average, most of it the "
        "commands they run and the JSON they decode."
    )
    if saq_lat:
        lines.append(
            f"- **Idle latency is a chain of hops.** A 1-task workflow on an idle system costs "
            f"{lat['round_trips']:.0f} round trips ({lat['commands']:.0f} client commands): start, subscribe, the "
            f"wake-up (BLPOP, with the first step's claim pipelined behind it: Redis runs the claim the moment the "
            f"token arrives), the step's commit (which hands the task straight to the same "
            f"dispatcher), the task's commit (which also commits the final step, run right after the task on the "
            f"dispatcher's copy of the run), then the result, published with the final commit. That is "
            f"{lat['p50_ms']:.1f} ms against saq's {saq_lat['p50_ms']:.1f} ms for ~6 round trips."
            + idle_penalty_text(limits)
            + (
                " The sequential part is four hops (start, the wake-up that brings the claim, two commits) against "
                "saq's two "
                "(enqueue, the worker's blocking pop and finish): the first step must be claimed and committed "
                "before its task exists in Redis, which is what makes the task durable. Closing the gap would "
                "mean running the task before its call is recorded (as Temporal's local activities do), a "
                "different guarantee; the rest is Python per hop (see the profile)."
                if lat["p50_ms"] > saq_lat["p50_ms"]
                else " The direct hand-off (a commit claims the work it made ready for its own dispatcher) is what "
                "brought it there: before it, each of the three items paid a wake-up and a claim."
            )
        )
    heap = extra.get("heap") or {}
    settled, unsettled = heap.get("settled"), heap.get("default")
    if settled and unsettled and "gc_us_per_workflow" in settled:
        lines.append(
            "- **The garbage collector.** A role process settles its heap before it serves (`gc.freeze()` of what "
            "the import left alive, young collections every 5,000 allocations: `bdurable.runtime.heap`). In this "
            f"run its dispatcher's collector took {settled['gc_us_per_workflow']:.0f} us per workflow (longest "
            f"pause {settled['gc_longest_ms']:.0f} ms) against {unsettled['gc_us_per_workflow']:.0f} us "
            f"({unsettled['gc_longest_ms']:.0f} ms) with CPython's settings; the drains themselves ran at "
            f"{settled['per_s']:,.0f} and {unsettled['per_s']:,.0f} workflows/s (the accelerators table). "
            "The longer a dispatcher runs, the more this counts: with CPython's settings every full collection "
            "walks every object of the process (`bdurable/runtime/heap.py` gives a 12,000-workflow measure)."
        )
    rep = extra.get("replay")
    if rep:
        lines.append(
            f"- **Replay.** Warm, a step costs the same at step 10 and step {int(rep['far_at'])} "
            f"({rep['near_ms']:.2f} vs {rep['far_ms']:.2f} ms per step+task, idle system: round trips, not "
            f"replay). Cold, after a restart, the first step replays {int(rep['history'])} entries in "
            f"{rep['cold_ms']:.0f} ms (~{rep['cold_ms'] * 1000 / max(1, rep['history']):.0f} us per entry, history "
            f"load and commit included) once, then the run is cached again."
        )
    parked = extra.get("parked")
    if parked:
        largest = max(parked["breakdown"].items(), key=lambda kv: kv[1])
        lines.append(
            f"- **Memory.** A parked workflow costs {parked['per_workflow']:,.0f} B: "
            + ", ".join(f"{name} {value:,.0f} B" for name, value in parked["breakdown"].items())
            + f"; the rest is Redis's keyspace tables ({parked['tables_per_workflow']:.0f} B) and allocator "
            f"rounding. The {largest[0]} is the largest part."
        )
    scale = extra.get("scale") or []
    if scale:
        single = [(n, f) for where, n, f in scale if where == "one Redis"]
        clustered = [(n, f) for where, n, f in scale if where != "one Redis"]
        parts = [f"{where} x{n}: {f['per_s']:,.0f}/s (Redis {f['redis_cpu']:.0%})" for where, n, f in scale]
        text = "- **Scale on 2 cores.** " + "; ".join(parts) + "."
        if single:
            n, busiest = max(single, key=lambda nf: nf[1]["machine_cpu"])
            if busiest["machine_cpu"] >= 0.9:
                text += (
                    f" On one Redis the machine is the limit: with {n} dispatchers it was "
                    f"{busiest['machine_cpu']:.0%} busy while Redis used {busiest['redis_cpu']:.0%} of a core, so "
                    f"more dispatcher processes only share the same 2 cores."
                )
            else:
                text += f" On one Redis the machine was at most {busiest['machine_cpu']:.0%} busy."
        if clustered:
            rt = max(f["round_trips_per_item"] for _, f in clustered)
            text += (
                f" On the cluster the store pipelines per node (one round trip per node and flush: {rt:.2f} per "
                f"item against {single[0][1]['round_trips_per_item'] if single else float('nan'):.2f} on one Redis), "
                f"and three Redis processes share the same 2 cores with the dispatchers: a cluster pays off with "
                f"cores (or machines) to spread over, which this machine does not have."
            )
        lines.append(text)
    drains = [one, three] + [f for _, _, f in scale]
    worst = max(f.get("others_cpu", 0.0) for f in drains)
    lines.append(
        "- **Noise.** Other processes on this shared machine move the throughput figures by 10-40% from one run "
        "to the next; the throughput rows are the median of interleaved rounds (the spread is in the notes), "
        f"and ratios close to 1 can flip between runs. In this run, processes other than Redis and the "
        f"dispatchers (the scheduler, the benchmark's polling, and anything else on the machine) used up to "
        f"{worst:.0%} of a core during a drain; the scheduler and the polling alone take a few %."
    )
    return [*lines, ""]
