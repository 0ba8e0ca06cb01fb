"""The `piagent` command: chat in a terminal, ask from a pipe, diagnose a deployment.

A client of the HTTP API (and, for `doctor`, of the same settings loader as the
server); importing it loads neither Flask nor the app.
"""
