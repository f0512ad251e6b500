"""Helpers shared by the tests: real processes started and always stopped."""
