"""Phases: the forward step (interact → perceive → integrate → multicast → receive), the backward
phase, evaluation, and the LangGraph loop that runs them."""
