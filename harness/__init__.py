"""Optimizer benchmarking harness: the engine (registry, runner, run store, executors); the
command line is the cli package above it, started as `python -m harness`."""

__version__ = "0.1.0"
