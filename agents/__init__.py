"""LLM agents that play the text environments (see the agents issue)."""
