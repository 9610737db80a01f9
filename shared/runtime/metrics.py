"""Prometheus metrics of one role process, in a registry of its own (no global state).

Names follow Prometheus conventions: a ``bdurable_`` prefix, ``_total`` counters, ``_seconds`` histograms,
and bounded labels only (workflow and task names, queue, status, outcome; never ids). Fleet-wide gauges
(queue depth, timers pending, dead-letter entries, live dispatchers) are read from Redis by the scheduler.
"""

from __future__ import annotations

from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]

M = TypeVar("M", Counter, Gauge, Histogram)

_STEP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_TASK_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)
_LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


class Metrics:
    def __init__(self, role: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        r = self.registry
        self.up = Gauge("bdurable_role_up", "1 while this role process runs", ["role"], registry=r)
        self.up.labels(role).set(1)
        # dispatcher
        self.workflows_started = Counter(
            "bdurable_workflows_started_total", "Workflows whose first step ran", ["name"], registry=r
        )
        self.workflows_finished = Counter(
            "bdurable_workflows_finished_total",
            "Workflows that ended, by status",
            ["name", "status"],
            registry=r,
        )
        self.steps = Counter("bdurable_steps_total", "Workflow steps committed", ["name"], registry=r)
        self.step_duration = Histogram(
            "bdurable_step_duration_seconds", "Time to replay and commit one step", ["name"],
            buckets=_STEP_BUCKETS, registry=r,
        )  # fmt: skip
        self.task_attempts = Counter(
            "bdurable_task_attempts_total",
            "Task attempts by outcome (ok, retry, fail)",
            ["task", "outcome"],
            registry=r,
        )
        self.task_duration = Histogram(
            "bdurable_task_duration_seconds",
            "Duration of one task attempt",
            ["task"],
            buckets=_TASK_BUCKETS,
            registry=r,
        )
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
        self.heartbeat_age = Gauge(
            "bdurable_heartbeat_age_seconds",
            "Seconds since this dispatcher's last successful heartbeat",
            registry=r,
        )
        self.in_flight = Gauge("bdurable_in_flight", "Work items this dispatcher is running", registry=r)
        # scheduler
        self.timers_fired = Counter("bdurable_timers_fired_total", "Timers fired", registry=r)
        self.timer_lag = Histogram(
            "bdurable_timer_lag_seconds", "How late timers fire after their due time (Redis clock)",
            buckets=_LAG_BUCKETS, registry=r,
        )  # fmt: skip
        self.timers_pending = Gauge("bdurable_timers_pending", "Timers waiting to fire", registry=r)
        self.queue_depth = Gauge("bdurable_queue_depth", "Items on ready lists", ["queue"], registry=r)
        self.queue_oldest_age = Gauge(
            "bdurable_queue_oldest_age_seconds", "Age of the oldest ready item", ["queue"], registry=r
        )
        self.dlq_entries = Gauge("bdurable_dlq_entries", "Entries in the dead-letter queue", registry=r)
        self.live_dispatchers = Gauge("bdurable_live_dispatchers", "Dispatchers with a valid heartbeat", registry=r)
        self.workflows_halted = Counter(
            "bdurable_workflows_halted_total", "Workflows halted as VERSION_MISMATCH", registry=r
        )
        self.workflows_expired = Counter(
            "bdurable_workflows_expired_total", "Finished workflows removed after retention", registry=r
        )
        # reaper
        self.reaped_workers = Counter("bdurable_reaped_workers_total", "Dead dispatchers reaped", registry=r)
        self.reaped_items = Counter(
            "bdurable_reaped_items_total", "Items recovered from dead dispatchers", ["kind"], registry=r
        )
        # signal bus
        self.events = Counter(
            "bdurable_events_total",
            "Events applied by outcome (delivered, buffered, dropped)",
            ["outcome"],
            registry=r,
        )
        self.signals_published = Counter("bdurable_signals_published_total", "Signals published", registry=r)
        self.cancellations = Counter("bdurable_cancellations_total", "Cancellations applied", registry=r)

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
