"""The scheduler role: fires due timers, releases delayed retries and wait timeouts, expires finished workflows."""

from bdurable.services.scheduler.loop import Scheduler

__all__ = ["Scheduler"]
