"""The prompt's shape: what stays the same from one answer to the next comes first (prefix cache)."""

from __future__ import annotations

from agents.conversation.persona import FACTS_INTRO, Knowledge, Memory, Persona


def test_the_next_prompt_starts_as_the_last_one_did_and_facts_sit_by_the_question() -> None:
    knowledge = Knowledge(["Trail shoes cost 89 euros.", "Kids shoes come in sizes 28 to 35."], [])
    persona = Persona("Nova", "You are {name}.", "Be brief.", 30, knowledge)
    memory = Memory(500)
    first = persona.messages("What do trail shoes cost?", memory)
    assert [m["role"] for m in first] == ["system", "system", "user"]
    assert first[1]["content"].startswith(FACTS_INTRO) and "- Trail shoes cost 89 euros." in first[1]["content"]
    memory.add("user", "What do trail shoes cost?")
    memory.add("assistant", "They cost 89 euros.")
    second = persona.messages("Which sizes do kids shoes come in?", memory)
    assert second[0] == first[0], "the persona never changes"
    assert second[1:3] == memory.messages(), "then the conversation, as the last prompt left it"
    assert second[3]["role"] == "system" and "sizes 28 to 35" in second[3]["content"]
    assert second[4] == {"role": "user", "content": "Which sizes do kids shoes come in?"}
    assert "euros" not in second[0]["content"], "no fact of one question in the shared part"


def test_memory_past_its_budget_drops_the_oldest_down_to_half_so_prompts_keep_their_start() -> None:
    memory = Memory(40)
    kept: list[list[str]] = []
    sizes: list[int] = []
    for n in range(12):
        memory.add("user", f"question number {n} about the shoes")  # ~8 tokens each
        kept.append([m["content"] for m in memory.messages()])
        sizes.append(memory.tokens())
    assert max(sizes) <= 40 and min(sizes[4:]) > 0, sizes
    trims = [n for n in range(1, 12) if kept[n][0] != kept[n - 1][0]]
    assert len(trims) < 6, f"trimmed at {trims}: every few messages, not at each one"
    assert kept[-1][-1] == "question number 11 about the shoes"
    for n in range(1, 12):  # between trims the memory only grows at its end
        if n not in trims:
            assert kept[n][:-1] == kept[n - 1]
