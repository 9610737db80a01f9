"""The signal_bus role."""
