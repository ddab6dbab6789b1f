"""Benchmarks: each module's ``run(**options) -> dict`` measures side by side in one run and returns figures."""
