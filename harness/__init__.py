"""Optimizer benchmarking harness: the engine (CLI, registry, runner, run store)."""

__version__ = "0.1.0"
