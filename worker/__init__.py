"""The LiveKit worker: one job per room, running llmrtc conversations for every human in it."""
