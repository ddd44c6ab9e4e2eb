"""Paper reproductions; each module is one `python -m harness reproduce NAME`."""
