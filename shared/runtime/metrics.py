"""Prometheus metrics of one role process, in a registry of its own (no global state).

Each role exports its own metrics only (a scheduler does not report a dispatcher's ``bdurable_in_flight``):
the groups below are created for the role that runs. Names follow Prometheus conventions: a ``bdurable_``
prefix, ``_total`` counters, ``_seconds`` histograms, and bounded labels only (workflow and task names, queue,
status, outcome; never ids). Fleet-wide figures (queue depth, timers pending, dead-letter entries, live
dispatchers, the engine's running totals) are read from Redis by the scheduler.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["ROLES", "FleetGate", "Metrics", "PayloadBytes", "RedisTotal"]

M = TypeVar("M", Counter, Gauge, Histogram)

ROLES = ("dispatcher", "scheduler", "reaper", "signal-bus", "console")

_STEP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_TASK_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)
_SCHEDULE_LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


class RedisTotal(Collector):
    """A counter whose values are running totals kept in Redis (counted by the scripts themselves, so every
    occurrence counts, whichever process caused it); the exporting role sets the latest values it read."""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.values: dict[tuple[str, ...], float] = {}

    def set(self, value: float, *labels: str) -> None:
        self.values[labels] = value

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(self.name.removesuffix("_total"), self.documentation, labels=list(self.labelnames))

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = self._family()
        for labels, value in self.values.items():
            family.add_metric(list(labels), value)
        yield family

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield self._family()


class PayloadBytes(Collector):
    """``bdurable_payload_bytes_total{form}``: the bytes of the payloads this process wrote, as the user sent them
    (``plain``) and as Redis holds them (``stored``: after compression, encryption, base64). Read from the codec's
    own counters when scraped, so sealing a payload costs no metric update."""

    NAME = "bdurable_payload_bytes"

    def __init__(self, codec: Any) -> None:
        self.codec = codec

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(
            self.NAME, "Bytes of payloads written: plain (as sent) and stored (as Redis holds them)", labels=["form"]
        )

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = self._family()
        family.add_metric(["plain"], self.codec.plain_bytes)
        family.add_metric(["stored"], self.codec.stored_bytes)
        yield family

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield self._family()


class FleetGate(Collector):
    """The fleet-wide gauges, collected only while this process is the elected exporter."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.exporting = False

    def collect(self) -> Iterator[Metric]:
        if self.exporting:
            yield from self.registry.collect()

    def describe(self) -> Iterator[Metric]:
        return iter(())


class Metrics:
    # dispatcher
    workflows_started: Counter
    workflows_finished: Counter
    steps: Counter
    step_duration: Histogram
    task_attempts: Counter
    task_duration: Histogram
    dead_lettered: Counter
    stale_commits: Counter
    handoffs: Counter
    steps_with_task: Counter
    heartbeat_age: Gauge
    in_flight: Gauge
    run_cache_bytes: Gauge
    run_cache_runs: Gauge
    # scheduler
    timers_fired: Counter
    timer_lag: Histogram
    timers_pending: Gauge
    queue_depth: Gauge
    queue_oldest_age: Gauge
    dlq_entries: Gauge
    live_dispatchers: Gauge
    halted_total: RedisTotal
    throttled_total: RedisTotal
    throttled_waiting: Gauge
    workflows_expired: Counter
    fleet_exporter: Gauge
    schedule_firings: Counter
    schedule_skips: Counter
    schedule_lag: Histogram
    # reaper
    reaped_workers: Counter
    reaped_items: Counter
    # signal bus
    events: Counter
    signals_published: Counter
    cancellations: Counter
    # console
    requests: Counter
    request_duration: Histogram
    streams: Gauge

    def __init__(self, role: str) -> None:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        self.role = role
        self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.up = Gauge("bdurable_role_up", "1 while this role process runs", ["role"], registry=self.registry)
        self.up.labels(role).set(1)
        {
            "dispatcher": self._dispatcher,
            "scheduler": self._scheduler,
            "reaper": self._reaper,
            "signal-bus": self._signal_bus,
            "console": self._console,
        }[role]()

    def _dispatcher(self) -> None:
        r = self.registry
        self.workflows_started = Counter(
            "bdurable_workflows_started_total", "Workflows whose first step ran", ["name"], registry=r
        )
        self.workflows_finished = Counter(
            "bdurable_workflows_finished_total", "Workflows that ended, by status", ["name", "status"], registry=r
        )
        self.steps = Counter("bdurable_steps_total", "Workflow steps committed", ["name"], registry=r)
        self.step_duration = Histogram(
            "bdurable_step_duration_seconds", "Time to replay and commit one step", ["name"],
            buckets=_STEP_BUCKETS, registry=r,
        )  # fmt: skip
        self.task_attempts = Counter(
            "bdurable_task_attempts_total", "Task attempts by outcome (ok, retry, fail)", ["task", "outcome"],
            registry=r,
        )  # fmt: skip
        self.task_duration = Histogram(
            "bdurable_task_duration_seconds", "Duration of one task attempt", ["task"], buckets=_TASK_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.dead_lettered = Counter(
            "bdurable_dead_lettered_total", "Task calls sent to the dead-letter queue", ["task"], registry=r
        )
        self.stale_commits = Counter(
            "bdurable_stale_commits_total", "Commits rejected because the lease had passed to another dispatcher",
            registry=r,
        )  # fmt: skip
        self.handoffs = Counter(
            "bdurable_handoffs_total", "Items a commit claimed for its own dispatcher (direct hand-off)", registry=r
        )
        self.steps_with_task = Counter(
            "bdurable_steps_with_task_total",
            "Workflow steps run right after their task and committed with its result (no claim of their own)",
            registry=r,
        )
        self.heartbeat_age = Gauge(
            "bdurable_heartbeat_age_seconds", "Seconds since this dispatcher's last successful heartbeat", registry=r
        )
        self.in_flight = Gauge("bdurable_in_flight", "Work items this dispatcher is running", registry=r)
        self.run_cache_bytes = Gauge(
            "bdurable_run_cache_bytes", "Bytes the workflow runs cached between steps are counted for", registry=r
        )
        self.run_cache_runs = Gauge("bdurable_run_cache_runs", "Workflow runs cached between steps", registry=r)

    def _scheduler(self) -> None:
        r = self.registry
        self.timers_fired = Counter("bdurable_timers_fired_total", "Timers fired", registry=r)
        self.timer_lag = Histogram(
            "bdurable_timer_lag_seconds", "How late timers fire after their due time (Redis clock)",
            buckets=_LAG_BUCKETS, registry=r,
        )  # fmt: skip
        self.workflows_expired = Counter(
            "bdurable_workflows_expired_total", "Finished workflows removed after retention", registry=r
        )
        self.schedule_firings = Counter(
            "bdurable_schedule_firings_total", "Schedule runs started, by schedule", ["schedule"], registry=r
        )
        self.schedule_skips = Counter(
            "bdurable_schedule_skips_total", "Scheduled times not run, by schedule and reason (overlap, missed)",
            ["schedule", "reason"], registry=r,
        )  # fmt: skip
        self.schedule_lag = Histogram(
            "bdurable_schedule_lag_seconds", "How late schedule runs start after their time plus jitter (Redis clock)",
            buckets=_SCHEDULE_LAG_BUCKETS, registry=r,
        )  # fmt: skip
        self.fleet_exporter = Gauge(
            "bdurable_fleet_exporter", "1 on the one scheduler exporting the fleet-wide gauges, else 0", registry=r
        )
        # Fleet-wide gauges: read from Redis and exported by one elected scheduler only (FleetGate), so that a
        # sum over schedulers counts each queued item once however many schedulers run.
        self.fleet = FleetGate()
        r.register(self.fleet)
        f = self.fleet.registry
        self.timers_pending = Gauge("bdurable_timers_pending", "Timers waiting to fire", registry=f)
        self.queue_depth = Gauge("bdurable_queue_depth", "Items on ready queues", ["queue"], registry=f)
        self.queue_oldest_age = Gauge(
            "bdurable_queue_oldest_age_seconds", "Age of the item next in line", ["queue"], registry=f
        )
        self.dlq_entries = Gauge("bdurable_dlq_entries", "Entries in the dead-letter queue", registry=f)
        self.live_dispatchers = Gauge("bdurable_live_dispatchers", "Dispatchers with a valid heartbeat", registry=f)
        self.halted_total = RedisTotal(
            "bdurable_workflows_halted_total", "Workflows halted as VERSION_MISMATCH (every halt, fleet-wide)"
        )
        f.register(self.halted_total)
        self.set_aside_total = RedisTotal(
            "bdurable_set_aside_total",
            "Work set aside because Redis could not read its data (a key of the wrong type?); retried every minute",
        )
        f.register(self.set_aside_total)
        self.throttled_total = RedisTotal(
            "bdurable_throttled_total", "Calls a limit held back, by task and reason (concurrency, rate)",
            ("task", "reason"),
        )  # fmt: skip
        f.register(self.throttled_total)
        self.throttled_waiting = Gauge(
            "bdurable_throttled_waiting", "Calls held back by a limit now, by task", ["task"], registry=f
        )

    def export_fleet(self, exporting: bool) -> None:
        """Export the fleet-wide gauges from this process (it holds the exporter duty) or not."""
        self.fleet.exporting = exporting
        self.fleet_exporter.set(1 if exporting else 0)

    def _reaper(self) -> None:
        r = self.registry
        self.reaped_workers = Counter("bdurable_reaped_workers_total", "Dead dispatchers reaped", registry=r)
        self.reaped_items = Counter(
            "bdurable_reaped_items_total", "Items recovered from dead dispatchers", ["kind"], registry=r
        )

    def _signal_bus(self) -> None:
        r = self.registry
        self.events = Counter(
            "bdurable_events_total", "Events applied by outcome (delivered, buffered, dropped)", ["outcome"],
            registry=r,
        )  # fmt: skip
        self.signals_published = Counter("bdurable_signals_published_total", "Signals published", registry=r)
        self.cancellations = Counter("bdurable_cancellations_total", "Cancellations applied", registry=r)

    def _console(self) -> None:
        r = self.registry
        self.requests = Counter(
            "bdurable_console_requests_total", "Console HTTP requests by route, method and status",
            ["route", "method", "status"], registry=r,
        )  # fmt: skip
        self.request_duration = Histogram(
            "bdurable_console_request_duration_seconds", "Console HTTP response time (live streams excluded)",
            ["route"], buckets=_STEP_BUCKETS, registry=r,
        )  # fmt: skip
        self.streams = Gauge("bdurable_console_streams", "Live workflow streams open (server-sent events)", registry=r)

    def child(self, metric: M, *labels: str) -> M:
        """``metric.labels(*labels)``, cached: the dispatcher updates several labelled metrics per item,
        and label sets are bounded (names, statuses, outcomes), so the cache is too."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def render(self) -> bytes:
        return generate_latest(self.registry)
