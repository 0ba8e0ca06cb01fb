"""What every HTML page piagent serves sends with it: a strict content security policy."""

from __future__ import annotations

from flask import Blueprint, Response


def serve_as_pages(blueprint: Blueprint, *, style_src: str, img_src: str) -> None:
    """Send the security headers with every answer of `blueprint` (errors too).

    The page may run only this server's files, connect only to it, and never be framed;
    `style_src` and `img_src` are the CSP sources its styles and images may come from.
    """
    policy = "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            f"style-src {style_src}",
            f"img-src {img_src}",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )
    headers = {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    }

    def secure(response: Response) -> Response:
        response.headers.update(headers)
        return response

    blueprint.after_request(secure)
