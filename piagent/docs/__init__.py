"""The API document (/openapi.json) and its interactive page (/docs)."""
