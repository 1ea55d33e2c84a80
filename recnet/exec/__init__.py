"""Executors: where a step's independent, pure work runs (in-process by default, or on Ray)."""
