"""WSGI entry point for gunicorn or any other WSGI server."""

from piagent.app import create_app

app = create_app()
