"""LiveKit-compatible development server (embedded SFU for local runs and tests)."""
