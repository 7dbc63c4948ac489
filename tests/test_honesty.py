"""The honesty rules on the demo personas' facts (agents/conversation/honesty.py), and the words
retrieval must not take for unknown ones: each case is one rule that can fail on its own."""

from __future__ import annotations

import pytest

from agents.conversation.retrieval import FactIndex
from agents.conversation.wordnet import DEFAULT_ROOT
from models.defaults import PROJECT_ROOT

needs_wordnet = pytest.mark.skipif(
    not (DEFAULT_ROOT / "index.noun").exists(), reason="needs Debian's wordnet-base (make test installs it)"
)
INGREDIENTS = "You need 400 grams of pasta, 6 tomatoes, a bunch of basil and 2 cloves of garlic."
TOURNAMENT = "Subscribers can join the Saturday tournament."
HARDWARE = "Every game on the stream runs on real hardware, never on an emulator."
VEGAN = "The dish is vegetarian; leave out the parmesan to make it vegan."
RUNNER_PRICE = "The Stride Runner running shoes cost 49 dollars."
LEFTOVERS = "Leftovers keep in the fridge for 2 days."


def facts(persona: str) -> list[str]:
    text = (PROJECT_ROOT / "configs" / "knowledge" / f"{persona}.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


@pytest.fixture(scope="module")
def index() -> dict[str, FactIndex]:
    aliases = {"Stride Runner": ["runners", "running shoes"], "Trail Pro": ["hiking shoes", "hikers"]}
    return {
        "shop": FactIndex(facts("shop"), names=["Nova"], aliases=aliases),
        "games": FactIndex(facts("games"), names=["Pixel"]),
        "kitchen": FactIndex(facts("kitchen"), names=["Sage"]),
    }


def chosen(index: dict[str, FactIndex], persona: str, question: str, context: str = "") -> list[str]:
    return [c.fact for c in index[persona].rank(question, context).chosen]


def test_the_facts_do_not_answer_for_the_past(index: dict[str, FactIndex]) -> None:
    ranking = index["kitchen"].rank("what did you cook last week?")
    assert ranking.chosen == [] and "last week" in ranking.why_none
    assert chosen(index, "shop", "what was the code on yesterday's stream?") == []
    assert chosen(index, "kitchen", "how long do leftovers last?") == [LEFTOVERS]


def test_what_time_needs_a_line_that_names_a_time_of_day(index: dict[str, FactIndex]) -> None:
    assert chosen(index, "games", "what time does the saturday tournament start?") == []
    assert chosen(index, "games", "when is the tournament?") == [TOURNAMENT]
    assert chosen(index, "kitchen", "what time are you live?") == ["The stream is live every Sunday at noon."]


def test_a_thing_only_named_gets_what_the_facts_say_of_it(index: dict[str, FactIndex]) -> None:
    assert chosen(index, "shop", "Tell me about the Trail Pro.") == [
        "The Trail Pro hiking shoes cost 89 dollars.",
        "The Trail Pro hiking shoes are waterproof.",
    ]
    assert chosen(index, "games", "Who made Star Raiders?") == []


def test_a_follow_up_naming_another_product_by_its_nickname_is_about_that_one(index: dict[str, FactIndex]) -> None:
    before = "How much do the Stride Runner shoes cost? The Stride Runner running shoes cost 49 dollars."
    assert chosen(index, "shop", "and the hiking ones?", before) == ["The Trail Pro hiking shoes cost 89 dollars."]


def test_how_much_beside_another_question_adds_the_line_with_the_number(index: dict[str, FactIndex]) -> None:
    assert sorted(chosen(index, "shop", "the hikers, how much are they and will they survive rain?")) == [
        "The Trail Pro hiking shoes are waterproof.",
        "The Trail Pro hiking shoes cost 89 dollars.",
    ]


@pytest.mark.parametrize(
    ("persona", "question", "fact"),
    [
        ("games", "is this on an emulator or the real deal?", HARDWARE),
        ("games", "is it a real Atari or emulated?", HARDWARE),
        ("shop", "i wear a 47, do you go up that high?", "Sizes go from 36 to 47."),
        ("shop", "whats the smallest size u sell", "Sizes go from 36 to 47."),
        ("shop", "sorry just joined, who's the host again", "Nova is the host of the Stride Shop live stream."),
    ],
)  # fmt: skip
def test_idioms_particles_and_fillers_do_not_hide_the_fact(
    index: dict[str, FactIndex], persona: str, question: str, fact: str
) -> None:
    assert chosen(index, persona, question) == [fact]


@pytest.mark.parametrize(
    ("persona", "question"),
    [
        ("shop", "do the runners run small?"),  # how it fits, not its sizes
        ("shop", "Do you sell hats?"),  # "do you" of "do you sell" is not two words pointing at a price
        ("kitchen", "Do you sell your olive oil?"),
        ("shop", "Can I pick up my order in person?"),
    ],
)
def test_a_phrase_asks_its_own_topic(index: dict[str, FactIndex], persona: str, question: str) -> None:
    assert chosen(index, persona, question) == []


@needs_wordnet
@pytest.mark.parametrize(
    ("persona", "question", "fact"),
    [
        ("kitchen", "how many tomatoes should I grab?", INGREDIENTS),  # grab: take hold of
        ("games", "Who's allowed to enter the tournament?", TOURNAMENT),  # allow: let
        ("kitchen", "I'm coeliac, any way to make this work for me?", "For a gluten-free version, use rice pasta."),
        ("kitchen", "my sister is vegan, can she eat this?", VEGAN),
        ("shop", "whats the damage on the Stride Runner, I need something for jogging in the park", RUNNER_PRICE),
        ("kitchen", "can i save what's left for later, how long does it last in the fridge", LEFTOVERS),
    ],
)  # fmt: skip
def test_light_verbs_and_the_viewers_own_people_are_not_unknown_topics(
    index: dict[str, FactIndex], persona: str, question: str, fact: str
) -> None:
    assert chosen(index, persona, question) == [fact]


@needs_wordnet
@pytest.mark.parametrize(
    ("persona", "question", "unknown"),
    [
        ("kitchen", "can i freeze the leftovers instead of keeping them in the fridge", "freeze"),  # the asked verb
        ("games", "is the saturday tournament also streamed on youtube", "youtube"),  # a name in lower case
        ("shop", "how much is express shipping?", "express"),  # a kind of mail, but shipping says no more
        ("games", "Can Star Raiders be played with two players at the same time?", "players"),  # a name counts once
    ],
)
def test_what_the_question_asks_about_must_be_known(
    index: dict[str, FactIndex], persona: str, question: str, unknown: str
) -> None:
    ranking = index[persona].rank(question)
    assert ranking.chosen == [] and unknown in ranking.why_none


def test_a_remark_beside_the_question_need_not_be_known(index: dict[str, FactIndex]) -> None:
    host = "Nova is the host of the Stride Shop live stream."
    assert chosen(index, "shop", "whats the name of the host? i wanna give her a shoutout on my story") == [host]
    assert chosen(index, "shop", "do you ship to Canada? asking for my cousin") == []  # asked about: it counts
    schedule = "The stream runs Tuesday and Thursday from 8 to 10 at night."
    assert chosen(index, "games", "what time does the stream start and end? I am in New York") == [schedule]
    assert chosen(index, "shop", "do you ship there? I live in Canada") == []  # "there" asks about the remark


def test_how_long_and_when_need_a_line_that_says_so(index: dict[str, FactIndex]) -> None:
    assert chosen(index, "kitchen", "how long does the lemon risotto take to make next week") == []
    assert chosen(index, "games", "when did pitfall come out") == [
        "Next week's game is Pitfall, a jungle adventure from 1982."
    ]
    assert chosen(index, "kitchen", "how long do the leftovers keep?") == [LEFTOVERS]


def test_a_follow_up_asks_its_own_thing_not_the_one_before(index: dict[str, FactIndex]) -> None:
    before = "How long does standard shipping take? Standard shipping takes 3 to 5 days."
    assert chosen(index, "shop", "and above what amount is it free", before) == [
        "Shipping is free on orders over 60 dollars."
    ]
