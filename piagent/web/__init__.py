"""The chat page: a blueprint serving one HTML page and its static files (WEB_UI)."""
