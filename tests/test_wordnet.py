"""WordNet's synonyms and kinds in retrieval: the reader of the database files Debian installs, and
what they change in which fact answers (and what they must not: an unknown word stays unknown
unless the question plainly names the fact it points at)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.conversation.lexicon import is_light_verb, is_own
from agents.conversation.retrieval import FactIndex
from agents.conversation.wordnet import DEFAULT_ROOT, open_wordnet
from models.defaults import PROJECT_ROOT

pytestmark = pytest.mark.skipif(
    not (DEFAULT_ROOT / "index.noun").exists(), reason="needs Debian's wordnet-base (make test installs it)"
)


def facts(persona: str) -> list[str]:
    text = (PROJECT_ROOT / "configs" / "knowledge" / f"{persona}.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


@pytest.fixture(scope="module")
def shop() -> FactIndex:
    return FactIndex(facts("shop"), names=["Nova"])


@pytest.fixture(scope="module")
def games() -> FactIndex:
    return FactIndex(facts("games"), names=["Pixel"])


@pytest.fixture(scope="module")
def kitchen() -> FactIndex:
    return FactIndex(facts("kitchen"), names=["Sage"])


INGREDIENTS = "You need 400 grams of pasta, 6 tomatoes, a bunch of basil and 2 cloves of garlic."


def chosen(index: FactIndex, question: str) -> list[str]:
    return [c.fact for c in index.rank(question).chosen]


def test_the_reader_finds_every_meaning_and_the_base_of_inflected_words() -> None:
    wordnet = open_wordnet()
    assert wordnet is not None
    assert "price" in wordnet.synonyms("damage", senses=99)  # its 4th meaning
    assert "price" not in wordnet.synonyms("damage", senses=1)
    assert wordnet.senses("tournaments", "n") == wordnet.senses("tournament", "n")
    assert wordnet.senses("cooking", "v") == wordnet.senses("cook", "v")
    assert wordnet.senses("zzzxq", "n") == []


def test_kinds_go_up_a_few_steps_and_stop_short_of_the_most_general() -> None:
    wordnet = open_wordnet()
    assert wordnet is not None
    assert {"contest", "event"} <= wordnet.broader("tournament")
    assert not {"entity", "abstraction", "physical entity"} & wordnet.broader("tournament")
    assert wordnet.broader("high") == set()  # an adjective first: "a high-pressure area" would mislead


def test_a_missing_database_leaves_retrieval_on_its_own_lexicon(tmp_path: Path) -> None:
    assert open_wordnet(str(tmp_path)) is None
    index = FactIndex(facts("shop"), names=["Nova"], wordnet=False)
    assert chosen(index, "whats the damage for the trail pro") == []


def test_a_rare_meaning_of_a_word_finds_its_fact(shop: FactIndex) -> None:
    assert chosen(shop, "whats the damage for the trail pro") == ["The Trail Pro hiking shoes cost 89 dollars."]


def test_a_thing_named_by_its_kind_finds_its_fact(games: FactIndex) -> None:
    assert chosen(games, "What's the Saturday event?") == ["Subscribers can join the Saturday tournament."]


@pytest.mark.parametrize(
    "question",
    ["How many levels does Pitfall have?", "Is there a prize for second place?", "What brand of pasta do you use?"],
)
def test_a_word_only_wordnet_explains_does_not_make_an_unknown_question_answerable(
    games: FactIndex, kitchen: FactIndex, question: str
) -> None:
    index = kitchen if "pasta" in question else games
    assert chosen(index, question) == []


@pytest.mark.parametrize(
    ("question", "fact"),
    [
        ("whats cooking", "Today's recipe is a tomato and basil pasta that takes 20 minutes."),
        ("what's the dish of the day", "Today's recipe is a tomato and basil pasta that takes 20 minutes."),
        ("What's next week's dish?", "Next week's recipe is a lemon risotto."),
        ("Where's the recipe?", "The recipe card is pinned in the chat."),
        ("How much time do I need?", "Today's recipe is a tomato and basil pasta that takes 20 minutes."),
        ("How much pasta should I buy?", INGREDIENTS),
    ],
)  # fmt: skip
def test_asking_what_a_thing_is_finds_the_fact_that_says_what_todays_is(
    kitchen: FactIndex, question: str, fact: str
) -> None:
    assert chosen(kitchen, question) == [fact]


def test_tonights_game_answers_what_is_being_played_but_not_how_many_are_owned(games: FactIndex) -> None:
    assert chosen(games, "what game we playing") == ["Tonight's game is Star Raiders, a space shooter from 1979."]
    assert chosen(games, "How many games do you own?") == ["The arcade shelf holds more than 300 cartridges."]


def test_names_typed_in_lower_case_are_no_english_words_but_typos_and_compounds_are() -> None:
    wordnet = open_wordnet()
    assert wordnet is not None
    assert not wordnet.is_english("youtube") and not wordnet.is_english("minecraft")
    assert wordnet.is_english("timezone") and wordnet.is_english("recieve") and wordnet.is_english("cooking")


def test_light_verbs_are_told_from_verbs_that_ask_something() -> None:
    wordnet = open_wordnet()
    assert wordnet is not None
    assert all(is_light_verb(w, wordnet) for w in ("grab", "leave", "work", "allowed", "save"))
    assert not any(is_light_verb(w, wordnet) for w in ("freeze", "add", "swap", "canned", "stream"))
    assert is_own("sister", wordnet) and is_own("feet", wordnet) and not is_own("cookbook", wordnet)
