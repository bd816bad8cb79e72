"""Token service and the LiveKit-compatible development server."""
