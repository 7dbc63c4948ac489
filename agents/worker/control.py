"""What the studio page's skip and say buttons do to a channel (pause, resume and removal are the
admin API's, through the same WorkerLink calls).

Skip stops everything the channel's conversation holds: the turn on air and the turns queued
behind it (a chat question's announce and its answer are two turns; skipping one must not air
the other). The chat desk's queue of waiting questions stays: those are the next ones.
Say speaks the streamer's text verbatim, with the same cleaning and length limit as the viewer
page's chat box; a paused channel refuses it (ChannelPaused), like every other turn.
"""

from __future__ import annotations

from agents.worker.channel import Channel
from agents.worker.routes import clean_chat_text

STUDIO_SOURCE = "studio"
"""The source of turns the studio page starts (what /healthz and the page's answer list show)."""


def skip(channel: Channel, reason: str = "skipped from the studio page") -> list[str]:
    """Stop what the channel is saying and what waits behind it -> the turn ids stopped."""
    conversation = channel.conversation
    stopped = []
    for turn in list(conversation.turns.values()):
        conversation.stop_turn(turn, reason)
        stopped.append(turn.turn_id)
    return stopped


def say(channel: Channel, text: object) -> str:
    """Have the channel say `text` -> its turn id. Raises ValueError (bad text), ChannelPaused, ChannelBusy."""
    clean = clean_chat_text(text, channel.cfg.max_chat_chars)
    return channel.conversation.start_turn("say", clean, source=STUDIO_SOURCE).turn_id
