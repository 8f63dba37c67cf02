"""The REST API (FastAPI). Build it with :func:`create_app`; it never imports torch."""

from service.api.app import create_app

__all__ = ["create_app"]
