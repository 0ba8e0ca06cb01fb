"""Model servers piagent can talk to."""
