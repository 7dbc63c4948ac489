"""Inference services shared by every channel: TTS, lip-sync rendering, face preparation.

Imports nothing from stream/ or agents/.
"""
