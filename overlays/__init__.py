"""Captions and chat overlays, rendered into frames or served as pages."""
