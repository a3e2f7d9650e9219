"""Test support: a ModelScope-compatible hub and real ModelScope SDKs in virtualenvs."""
