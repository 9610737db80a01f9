"""Deterministic replay: workflow code in, durable commands out. No Redis and no clock in here."""
