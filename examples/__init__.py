"""Runnable example apps: ``bdurable dev --app examples.onboarding`` (run from the repository root)."""
