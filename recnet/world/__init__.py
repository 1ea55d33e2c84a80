"""The world: client agents (users, items), router agents and the networkx graph that wires them.

Pipeline position: built from a ``Dataset`` and a ``Scenario`` by ``recnet.world.build``; mutated
only by the phases in ``recnet.phases``. Nothing in this package calls an LLM or does I/O.
"""
