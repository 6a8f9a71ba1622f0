"""Integrations with web frameworks; each module needs its own optional extra."""
