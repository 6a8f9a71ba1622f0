"""Runnable examples for snak_runtime; the test suite executes every one of them."""
