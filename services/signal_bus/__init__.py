"""The signal-bus role: routes inbound events and cancellations to workflows, and signals out to subscribers."""

from bdurable.services.signal_bus.bus import SignalBus

__all__ = ["SignalBus"]
