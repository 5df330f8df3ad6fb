"""Backends shipped with the core (numpy and array-api-strict)."""
