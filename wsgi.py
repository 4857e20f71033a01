"""WSGI entry point: ``gunicorn wsgi:app``."""

from crowdpower import create_app

app = create_app()
