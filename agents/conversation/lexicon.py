"""Words -> comparable terms: stems, spelling variants and topic concepts, for matching viewers'
questions to the channel's facts.

Viewers never word a question like the fact that answers it ("can I send them back?" against
"Returns are free within 30 days"). A 135M model cannot bridge that reliably, so retrieval does:
both sides are reduced to stems plus the concepts their words name ("send back" and "returns"
both name @return). The concept table is general English for what viewers of a shop, a games or
a cooking stream ask about, not a list of this project's questions; a channel adds its own names
(a product's nicknames) with `persona.aliases`.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agents.conversation.wordnet import WordNet

STOP = frozenset(
    "a an the is are was were be been being am do does did doing what how which who whom whose when where why "
    "can could would should will shall may might must i you we they he she it me my mine your yours our ours "
    "their them us him her his its of to in on for with and or at by from this that these those there here "
    "please tell about any some have has had get gets got getting let lets know say said im youre ive id dont "
    "doesnt isnt arent wont cant s t ll re ve d m just really so very too also then than if but not no yes oh "
    "hey um uh like one ones thing things stuff into onto every anything something everything all whats hows "
    "wheres whos thats theres heres lets youll youve ill shes hes whoever whatever whichever wherever whenever "
    "only around behind over under above below near through across along same such nor during before "
    "after against between until both each few other once further else besides instead rather actually basically "
    "anyway though tho r u ur ya yo rn pls plz thx btw lol sorry anybody somebody whether without gotta haha hehe "
    "per via".split()
)
"""Words that carry no topic (a question's frame: "can you tell me what ...", its prepositions and
fillers, and chat's shorthand: "r u", "rn")."""

GENERIC = frozenset(
    "want need wanna gonna go going come coming goes went gone make made look looking see seen think thought "
    "use used using give gave take took put find found try tried check checking eat eating drink do done keep "
    "kept buy bought sell sold order ordered pick picked right now currently still again already ever never "
    "always often usually maybe exactly good great nice cool awesome best better okay ok fine sure lot lots "
    "little bit much many more most less pair pairs guys guy everyone everybody anyone someone people person "
    "chat viewer viewers stream streams show shows channel question questions answer thanks thank well way "
    "kind sort type should carry include included including available wonder wondering curious call called "
    "named enough still far left leave policy policies up down version versions".split()
)
"""Common words that say little about which fact is meant; a question made only of these and of
fact words is not about something the facts lack."""

SPELLING = {
    "color": "colour", "colors": "colours", "colored": "coloured", "favorite": "favourite", "gray": "grey",
    "theater": "theatre", "center": "centre", "flavor": "flavour", "flavors": "flavours", "organize": "organise",
    "mom": "mum", "cozy": "cosy", "jewelry": "jewellery", "catalog": "catalogue",
    "wat": "what", "wut": "what", "tonite": "tonight", "ppl": "people", "thru": "through", "cuz": "because",
    "lives": "life", "knives": "knife", "wives": "wife", "halves": "half", "shelves": "shelf", "leaves": "leaf",
}  # fmt: skip

CONCEPTS: dict[str, tuple[str, ...]] = {
    # commerce
    "price": ("price", "prices", "cost", "costs", "expensive", "cheap", "cheapest", "pricey", "afford", "dollar",
              "dollars", "euro", "euros", "buck", "bucks", "pay", "paying", "charge", "~how much", "go for", "~free",
              "set me back", "spend", "fee", "fees", "buy", "~sell", "do you sell", "do u sell", "purchase", "~money"),
    "discount": ("deal", "deals", "discount", "discounts", "offer", "sale", "code", "coupon", "promo", "voucher",
                 "percent", "~off", "bargain", "special"),
    "return": ("return", "returns", "returning", "send back", "send them back", "send it back", "refund",
               "refunds", "money back", "exchange", "change my mind"),
    "shipping": ("shipping", "ship", "ships", "delivery", "deliver", "delivered", "arrive", "arrives", "postage",
                 "post", "mail", "dispatch", "courier", "shows up", "show up", "~order", "~orders"),
    "pickup": ("pick up", "pickup", "collect", "in person", "in store", "click and collect"),
    "size": ("size", "sizes", "sizing", "size range", "fit", "fits", "biggest", "largest", "smallest", "~big", "~small",
             "~large", "~tiny", "~wear"),
    "colour": ("colour", "colours", "coloured", "shade", "shades", "colourway", "blue", "black", "coral", "red",
               "white", "green", "grey", "pink"),
    "weight": ("weigh", "weighs", "weight", "heavy", "light", "lightweight", "gram", "grams", "kilo", "kilos",
               "ounce", "ounces"),
    "water": ("waterproof", "water", "wet", "rain", "rainy", "dry", "puddle", "puddles", "snow", "~weather"),
    # a stream's schedule and people
    "schedule": ("when", "what time", "at what time", "which day", "which days", "what day", "what days",
                 "schedule", "hours", "live", "~start", "~starts", "~end", "~ends", "evening", "night",
                 "morning", "noon", "~today", "~tonight", "weekday", "weekdays", "weekly", "monday", "tuesday",
                 "wednesday", "thursday",
                 "friday", "saturday", "sunday", "~late", "~early", "~weekend", "~on air", "~time"),
    "duration": ("how long", "how much time", "~time", "minutes", "minute", "takes", "~take", "quick", "quickly",
                 "how fast", "~fast", "~long", "within", "~days", "~weeks", "~hours", "how many days",
                 "how many weeks", "how many hours", "how many minutes"),
    "host": ("host", "hosts", "hosting", "presenter", "~name", "running this", "chef", "streamer", "who are you",
             "who is", "~who"),
    # games
    "game": ("~game", "~games", "~play", "~playing", "~played", "~title", "~titles"),
    "score": ("score", "scores", "record", "points", "high score", "~beat", "~top"),
    "vote": ("vote", "votes", "voting", "poll", "choose", "decide", "~pick", "~picked"),
    "year": ("year", "how old", "released", "release", "came out", "come out", "~old", "~when"),
    "hardware": ("hardware", "console", "pc", "machine", "computer", "~original", "~real", "~run on", "~runs on"),
    "emulation": ("emulator", "emulators", "emulation", "emulate", "emulated", "original hardware", "real hardware",
                  "~real", "~original", "~genuine", "~authentic"),
    "controller": ("joystick", "controller", "stick", "pad", "gamepad", "button", "buttons", "fire button"),
    "tournament": ("tournament", "competition", "contest", "compete", "championship", "~enter", "~join"),
    "prize": ("prize", "win", "wins", "won", "winning", "winner", "champion", "reward"),
    "genre": ("genre", "kind of game", "type of game", "shooter", "adventure", "platformer", "space", "jungle",
              "~about"),
    "command": ("command", "commands", "~type", "~typing", "~chat"),
    "collection": ("collection", "cartridge", "cartridges", "cart", "carts", "shelf", "library", "~own"),
    # cooking
    "recipe": ("recipe", "recipes", "~cook", "~cooking", "~cooked", "~dish", "~meal", "menu", "~making", "~make"),
    "serves": ("serve", "serves", "serving", "servings", "portion", "portions", "feed", "feeds", "people",
               "family", "guests"),
    "ingredient": ("ingredient", "ingredients", "~need", "goes in", "go in", "go into", "goes into", "put in",
                   "shopping list", "~buy",
                   "~how much", "~how many"),
    "diet": ("vegetarian", "vegan", "meat", "dairy", "cheese", "parmesan", "~allergy", "~allergic"),
    "gluten": ("gluten", "coeliac", "celiac", "wheat", "~allergy", "~allergic"),
    "storage": ("leftover", "leftovers", "fridge", "~store", "~keep", "~keeps", "~last", "~tomorrow"),
    "heat": ("heat", "low heat", "high heat", "medium", "simmer", "simmers", "boil", "boils", "boiling", "stove",
             "~low", "~high", "~cook"),
    "pasta": ("pasta", "noodle", "noodles", "spaghetti", "penne"),
    "herb": ("herb", "herbs", "basil", "parsley", "spice", "spices"),
    "flavour": ("flavour", "flavours", "flavoured", "taste", "tastes", "~lemon", "~tomato", "~basil", "~garlic"),
    "oil": ("oil", "olive"),
    "card": ("card", "written", "printed", "pinned", "find the recipe", "where is the recipe"),
    "salt": ("salt", "salted", "salty"),
    "place": ("~where", "located", "location", "pinned", "~shelf", "~from", "~in the chat"),
    "next": ("~next", "upcoming", "coming up", "next week", "next time", "~later"),
}  # fmt: skip
"""concept -> words and phrases that name it (lower case, British spelling). "~": the word often
appears without meaning the concept ("how much" is a price or a quantity): it helps rank facts, but
a question is not refused for lacking a fact about it."""

IDIOMS: dict[str, tuple[str, ...]] = {
    "real deal": ("~emulation",), "big deal": (), "no big deal": (), "true to size": ("fit",), "run small": ("fit",),
    "run large": ("fit",), "run big": ("fit",),
}  # fmt: skip
"""Phrases whose words lose their own meaning ("the real deal" is no discount; "do they run small?"
asks how a shoe fits, not its sizes): phrase -> the concepts it names ("~": loosely)."""

_TOKEN = re.compile(r"!?[a-z0-9]+(?:[.,'][0-9a-z]+)*")
_SUFFIXES = ("ing", "ies", "es", "ed", "s")


def tokens(text: str) -> list[str]:
    """Lower-case word and number tokens; "48,200" and "3.50" stay whole, "runner's" -> "runner"."""
    out = []
    for tok in _TOKEN.findall(text.lower().replace("’", "'")):
        tok = tok.removesuffix("'s").replace("'", "")
        out.append(SPELLING.get(tok, tok))
    return out


_PLAIN_S = frozenset("shoes toes canoes hoes oboes horseshoes tiptoes".split())
"""Words in -oes that are plain plurals (unlike "tomatoes")."""


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """A crude English stem, the same for a word's plural, -ing and -ed forms ("returns" -> "return");
    a chat command is its word ("!score" -> "score")."""
    once = _stem_once(word)
    base = _stem_once(once) if once != word else once  # "evenings" -> "evening" -> "even", as "evening"
    return base[:-1] if len(base) >= 4 and base.endswith("e") and base.isalpha() else base  # "emulate(d)": "emulat"


def _stem_once(word: str) -> str:
    word = word.removeprefix("!")
    if not word.isalpha() or len(word) <= 3:
        return word
    if word in _PLAIN_S:
        return word[:-1]
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            base = word[: -len(suffix)]
            if suffix == "es" and not base.endswith(("s", "x", "z", "ch", "sh", "o")):
                base = word[:-1]  # "shoes" -> "shoe", "boxes" -> "box"
            if suffix in ("ing", "ed") and len(base) > 3 and base[-1] == base[-2] and base[-1] not in "lsz":
                base = base[:-1]  # "shipping" -> "ship"
            return base
    return word


def _phrase_index() -> dict[tuple[str, ...], dict[str, bool]]:
    index: dict[tuple[str, ...], dict[str, bool]] = {}
    for concept, phrases in CONCEPTS.items():
        for phrase in phrases:
            key = tuple(stem(t) for t in tokens(phrase.lstrip("~")))
            strong = not phrase.startswith("~")
            index.setdefault(key, {})[concept] = index.get(key, {}).get(concept, False) or strong
    return index


PHRASES = _phrase_index()
"""stem sequence -> {concept: strong?}"""
LONGEST_PHRASE = max(len(k) for k in PHRASES)


def concepts_of(stems: tuple[str, ...]) -> dict[str, bool]:
    """The concepts one word or phrase (as stems) names, and whether strongly."""
    return PHRASES.get(stems, {})


NUMBER_WORDS = {
    "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7", "eight": "8",
    "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "fifteen": "15", "twenty": "20", "thirty": "30",
    "forty": "40", "fifty": "50", "sixty": "60", "hundred": "100", "thousand": "1000", "dozen": "12",
}  # fmt: skip
QUANTITY_QUESTIONS = ("how many", "how much", "how long", "how old", "how heavy", "how big", "how far", "how late",
                      "what percent", "how expensive", "how pricey", "how quick", "how fast")  # fmt: skip
"""Questions whose answer is a number: facts that state none rank lower."""


def meaning_terms(word: str, wordnet: WordNet) -> tuple[set[str], set[str]]:
    """The concepts and the stems of what names each of `word`'s meanings, and its kind ("damage":
    one meaning is a price; "dough": money): weak evidence, for a word that nothing else explains."""
    concepts: set[str] = set()
    stems: set[str] = set()
    for synonym in wordnet.heads(word):
        key = tuple(stem(t) for t in tokens(synonym))
        concepts.update(c for c, strong in concepts_of(key).items() if strong)
        if len(key) == 1:
            stems.add(key[0])
    return concepts, stems - STOP - GENERIC


def broader_stems(word: str, wordnet: WordNet) -> set[str]:
    """Stems of the one-word names of what `word` is a kind of ("tournament": "contest", "event"),
    so that a question may name a fact's thing by its kind ("the Saturday event")."""
    return {stem(w) for w in wordnet.broader(word) if " " not in w and "-" not in w} - STOP - GENERIC


LIGHT_VERBS = frozenset("get take go do make put give let have keep come".split())
OWN_KINDS = frozenset({"person", "body part", "social group", "animal"})


def is_light_verb(word: str, wordnet: WordNet) -> bool:
    """A verb whose most frequent meanings are said with, or are kinds of, a common verb ("grab":
    take hold of, "work": do work, "allowed": let, "save": keep) says no more than that verb does."""
    if wordnet.senses(word, "a"):  # "canned" ("put up"), "express": said of a thing, not done
        return False
    said = wordnet.synonyms(word, senses=2, parts="v") | wordnet.kinds(word, "v")
    return any(synonym.split()[0] in LIGHT_VERBS for synonym in said)


def is_own(word: str, wordnet: WordNet) -> bool:
    """A person, pet or body part ("my sister", "my feet"): after "my", the viewer's own, not what
    the question asks the facts about."""
    return bool(wordnet.broader(word, depth=7, senses=2) & OWN_KINDS)


def is_number(token: str) -> bool:
    return token[:1].isdigit()


def number_value(token: str) -> str:
    """A number token in one spelling: "48,200" -> "48200", "3.50" stays (a decimal point)."""
    return token.replace(",", "") if re.fullmatch(r"\d{1,3}(,\d{3})+", token) else token
