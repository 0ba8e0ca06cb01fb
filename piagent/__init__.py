"""piagent: a small agent server in front of a local Ollama, for a Raspberry Pi.

The app is built by `piagent.app.create_app`; importing the package loads nothing else.
"""
