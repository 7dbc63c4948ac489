"""Streaming sentence splitting: abbreviations, decimals, CJK, an early first clause."""

from __future__ import annotations

import pytest

from agents.conversation.sentences import ClauseSplitter, split_sentences


def stream(text: str, step: int = 3, **kw: int) -> list[str]:
    s = ClauseSplitter(**kw)
    out: list[str] = []
    for i in range(0, len(text), step):
        out += s.feed(text[i : i + step])
    return out + s.flush()


@pytest.mark.parametrize(
    ("text", "pieces"),
    [
        ("Dr. Smith is here. He costs 3.50 dollars!", ["Dr. Smith is here.", "He costs 3.50 dollars!"]),
        ("It is approx. 5 km, i.e. far. Really?", ["It is approx. 5 km, i.e. far.", "Really?"]),
        ("J. R. R. Tolkien wrote it. Yes.", ["J. R. R. Tolkien wrote it.", "Yes."]),
        ('She said "hi." Then left.', ['She said "hi."', "Then left."]),
        ("大家好。欢迎来到直播间！有问题吗？", ["大家好。", "欢迎来到直播间！", "有问题吗？"]),
        ("Wait... what? No!", ["Wait...", "what?", "No!"]),
        ("**Great** question #1.", ["Great question 1."]),
    ],
)
def test_whole_texts(text: str, pieces: list[str]) -> None:
    assert split_sentences(text) == pieces
    assert stream(text, first_clause_chars=0) == pieces, "streaming in small deltas gives the same pieces"


def test_first_clause_goes_early_then_whole_sentences() -> None:
    text = "Sure thing, our running shoes cost 49 dollars, and they come in blue. Anything else, friend?"
    assert stream(text) == [
        "Sure thing,",
        "our running shoes cost 49 dollars, and they come in blue.",
        "Anything else, friend?",
    ]


def test_a_boundary_waits_for_the_next_character() -> None:
    s = ClauseSplitter(first_clause_chars=0)
    assert s.feed("It costs 3.") == []
    assert s.feed("50 dollars. Next") == ["It costs 3.50 dollars."]
    assert s.flush() == ["Next"]


def test_thousands_separator_is_not_a_clause() -> None:
    assert stream("The price is 1,299 dollars today, friend.", step=1)[0] != "The price is 1,"


def test_run_on_text_is_broken_at_a_space() -> None:
    pieces = stream("word " * 100, max_chars=60)
    assert all(len(p) <= 60 for p in pieces) and len(pieces) > 5


def test_without_a_comma_the_first_piece_ends_after_four_words() -> None:
    text = "The Stride Runner costs forty nine dollars for a pair. Anything else?"
    assert stream(text) == ["The Stride Runner costs", "forty nine dollars for a pair.", "Anything else?"]
