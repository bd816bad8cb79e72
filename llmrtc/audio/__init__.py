"""Audio: Silero VAD, the speech segmenter, interruption detection and codecs."""
