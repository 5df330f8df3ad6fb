"""Engines shipped with the core (the reference engine)."""
