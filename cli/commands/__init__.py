"""CLI verbs; each module here is one `python -m harness VERB`."""
