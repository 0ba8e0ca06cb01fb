"""`piagent doctor`: check a deployment from the machine it runs on, one line per check."""
