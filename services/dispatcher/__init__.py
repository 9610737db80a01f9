"""The dispatcher role: claims ready workflow steps and tasks, runs them, commits their results."""

from bdurable.services.dispatcher.dispatcher import Dispatcher

__all__ = ["Dispatcher"]
