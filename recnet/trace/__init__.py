"""Trace store: every agent action of a run, in one SQLite file (the last stage of the pipeline)."""
