"""The ``recnet`` command line (``recnet.cli.app``) and its presentation helpers.

Pipeline position: the outermost layer, above the composition root (``recnet.runner``) and the
trace reports (``recnet.trace.report``). Entry point: ``recnet.cli.app:main``.
"""
