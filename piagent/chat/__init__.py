"""The chat core: one generation, its conversation turn, the context budget, admission."""
