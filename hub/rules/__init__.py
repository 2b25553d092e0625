"""The local alert rules (placeholder until the alert engine lands)."""
