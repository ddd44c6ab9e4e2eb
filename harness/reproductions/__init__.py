"""Reproductions of the seed papers' comparisons (`python -m harness reproduce NAME`).

A module here defines PARAMS (settable with --set), check(options),
and reproduce(seeds, out_dir, runs_dir, options) -> path of the report."""
