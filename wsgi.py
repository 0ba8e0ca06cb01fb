"""WSGI entry point for gunicorn or any other WSGI server."""

from piagent import create_app

app = create_app()
