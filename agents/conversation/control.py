"""The narrow interface to a channel's turns: what chat, the page, the listener and the admin API
may do with a channel's speech, whatever process or half of the channel is behind it."""

from __future__ import annotations

from typing import Protocol

from agents.conversation.turns import TurnHandle


class ChannelBusy(RuntimeError):
    """Too much is already queued to be said."""


class ChannelPaused(RuntimeError):
    """The channel is paused (admin API or a mod): it shows its idle picture and says nothing."""


class TurnControl(Protocol):
    name: str
    paused: str | None
    """Why the channel is paused (None: it is not)."""
    turns: dict[str, TurnHandle]
    """Turns not finished yet: waiting, producing or on air (TurnHandle.state says which)."""

    def start_turn(
        self, kind: str, text: str, *, source: str = "chat", priority: int = 0, user: str = "", held: bool = False
    ) -> TurnHandle:
        """Queue a turn: "answer" a question, "say" a text, or a pre-rendered "line" by name.
        Raises ValueError (nothing to say), ChannelBusy or ChannelPaused."""
        ...

    def release_turn(self, turn: TurnHandle) -> None:
        """A held turn may air now."""
        ...

    def withdraw_turn(self, turn: TurnHandle, reason: str) -> None:
        """Drop a held turn that has not aired."""
        ...

    def stop_turn(self, turn: TurnHandle, reason: str) -> None:
        """Stop one turn, waiting or on air; its audio is cut at the next frame."""
        ...

    def interrupt(self, reason: str) -> list[str]:
        """Stop every turn that is producing or on air; returns their ids."""
        ...

    def pause(self, reason: str) -> None: ...

    def resume(self) -> None: ...
