"""Token service: authenticates callers and issues least-privilege LiveKit room tokens."""

from signalling.service.app import create_app
from signalling.service.config import TokenServiceSettings

__all__ = ["TokenServiceSettings", "create_app"]
