"""Live chat: a Twitch-compatible IRC bot, commands, moderation and a paced question queue.

  IRC (one connection for the studio) / the page's chat box
    -> ChatMessage (who, role from server tags, text)
    -> ChatDesk of the channel: input filter -> command or question -> permissions, per-user limit
    -> broadcast delay (where !dump can drop it) -> question queue (priority, dedupe, max age)
    -> paced turns on the channel; the answer's text back to chat
Its config section lives in agents/config/chat.py with the rest of the schema.
"""
