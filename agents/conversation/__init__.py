"""A channel's talking half: turns and their handles, the answer pipeline (LLM -> clauses -> TTS),
persona, memory and knowledge, and the listener that turns viewers' speech into questions.

It reaches the channel's media only through the Program's timeline (enqueue, cut, events)."""
