"""The reaper role: detects dead dispatchers by their heartbeat and re-queues their in-flight work."""

from bdurable.services.reaper.loop import Reaper

__all__ = ["Reaper"]
