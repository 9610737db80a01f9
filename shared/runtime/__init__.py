"""What every role process shares: lifecycle and signals, logging, metrics and health endpoints."""
