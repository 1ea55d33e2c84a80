"""Brains: the policies behind agent operations (offline reference policy or an LLM)."""
