"""Broadcast safety for chat: what may come in, and what the avatar may say.

Input: control and binary characters, oversized lines, links and blocklisted words are refused
(IRC colour/bold codes are stripped first, they are formatting, not content). Matching is done on
a normalised copy (NFKC, zero-width characters removed, any case), so "B\u200bAD" is "bad".
Output: every clause the avatar is about to say passes `filter_output` before TTS; a blocklisted
word is replaced, or its clause skipped, as the channel's config says.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

_IRC_FORMATTING = re.compile(r"\x03(?:\d{1,2}(?:,\d{1,2})?)?|[\x02\x0f\x11\x16\x1d\x1e\x1f]")
_LINK = re.compile(
    r"(?i)(?:\b[a-z][a-z0-9+.-]*://|\bwww\.)\S+"
    r"|\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:com|net|org|tv|gg|io|ly|me|co|xyz|info|biz|ru|de|uk|app|dev|link|live"
    r"|shop|site|online|store|club|top|gl|to|be|us)\b(?:/\S*)?"
)
_QUOTES = str.maketrans({"«": '"', "»": '"'})


class Refused(ValueError):
    """A chat line the channel will not take; str() is the reason (logged, and told to the page)."""


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    return "".join(c for c in text if unicodedata.category(c) != "Cf")


class Moderation:
    def __init__(
        self,
        *,
        blocklist: Iterable[str],
        max_chars: int,
        allow_links: bool,
        output_mode: str = "replace",
        replacement: str = "beep",
    ) -> None:
        terms = sorted({_normalise(w.strip()).casefold() for w in blocklist}, key=len, reverse=True)
        alternatives = "|".join(re.escape(t) for t in terms)
        self._blocked = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE) if terms else None
        self.max_chars = max_chars
        self.allow_links = allow_links
        self.output_mode = output_mode
        self.replacement = replacement

    def check_input(self, text: str) -> str:
        """The chat text as it may be used (formatting stripped, spaces collapsed), or Refused."""
        text = _IRC_FORMATTING.sub("", text)
        if any(unicodedata.category(c) in ("Cc", "Cs", "Co") for c in text) or "\ufffd" in text:
            raise Refused("it holds control or binary characters")
        text = " ".join(text.split()).translate(_QUOTES)  # « » would let a viewer close the LLM's quotes
        if not text:
            raise Refused("it is empty")
        if len(text) > self.max_chars:
            raise Refused(f"it has {len(text)} characters; at most {self.max_chars} are allowed")
        if not self.allow_links and _LINK.search(_normalise(text)):
            raise Refused("links are not allowed")
        if self._blocked is not None and self._blocked.search(_normalise(text)):
            raise Refused("it holds a blocked word")
        return text

    def filter_output(self, text: str) -> str | None:
        """`text` with blocklisted words replaced; None when the clause is to be skipped."""
        if self._blocked is None:
            return text
        text = _normalise(text)
        if self.output_mode == "skip" and self._blocked.search(text):
            return None
        return self._blocked.sub(lambda _: self.replacement, text)
