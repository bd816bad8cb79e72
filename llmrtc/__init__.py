"""llmrtc: realtime voice and vision AI agents for multi-person LiveKit rooms.

The framework package: types, providers, orchestrators, tools, playbooks, audio. It never imports livekit;
the room transport lives in the ``worker`` package.
"""

__version__ = "0.1.0"
