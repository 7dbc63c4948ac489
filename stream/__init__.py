"""Media transport: the per-channel Program timeline, encode-once fan-out, WebRTC, MP4.

Imports nothing from agents/ or models/ (design.md: dependencies point one way).
"""
