"""WSGI entry point for gunicorn or any other WSGI server."""

from piagent.app import create_app

app = create_app()
# The name PEP 3333 hosts look for by default (mod_wsgi, uWSGI).
application = app
