"""The OpenAI-compatible API under /v1: each agent is a model."""
