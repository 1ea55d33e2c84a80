"""Experiment scripts: the main comparison, the sensitivity study and the propagation ground truth.

Not part of the installed library (the wheel ships ``recnet`` only). Run the scripts from the
repository root, e.g. ``python experiments/compare.py --smoke``; see ``experiments/README.md``.
"""
