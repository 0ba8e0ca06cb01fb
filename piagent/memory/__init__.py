"""Conversation memory: the store contract (`base`) and its three backends, opened by `factory`."""
