"""Flask plumbing: app state, bodies, error mapping, auth, request log, the relay."""
