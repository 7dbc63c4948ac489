"""One channel's chat desk: every chat line (IRC or the page's box) meets the same rules here.

  line -> meant for the bot? (prefix command / @mention; the page's box always is)
  -> input filter -> permission (least role per command) -> per-user limit (mods exempt)
  -> command: done at once (skip, pause, resume, persona, clear, dump, help)
     say:     the mods' lane: aired before any question, after the broadcast delay
     ask:     the question queue (priority, dedupe, max age, bounded), paced
The desk airs one item at a time and waits until it is finished, so the queue, not the
channel, decides what comes next. A question airs as two turns: the announce ("Here's a question
from alice.", so viewers hear whom the avatar answers; a viewer's words are read out only with
read_questions, after the moderation filter), then the answer; `!skip` stops both.
`!pause` only stops new questions from being started: the answer on air goes on (`!skip` cuts
it), and commands, `!say` included, keep working.
Every IRC line is reported to `settled` once the desk is done with it (handled at once, aired,
or dropped with a reason in the log): the front replays the others if this worker dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from agents.chat.commands import NEEDS_TEXT, USAGE, Request, allowed, help_text, parse_request, without_cheers
from agents.chat.messages import ChatMessage, Retraction, Role
from agents.chat.moderation import Moderation, Refused
from agents.chat.personas import build_persona, quoting
from agents.chat.queue import Clock, PerUserLimit, Question, QuestionQueue, Repeat
from agents.config.chat import ChatConfig
from agents.conversation.control import ChannelBusy, ChannelPaused
from agents.conversation.conversation import Conversation
from agents.conversation.turns import TurnHandle
from agents.supervisor import cancel_and_wait

log = logging.getLogger(__name__)

CHANNEL_PAUSE_CHECK_S = 1.0
"""While the channel itself is paused (admin API), the desk holds everything and looks again this often."""
SAY_LANE = 20
"""Mods' !say lines waiting to air, at most (a mod cannot flood the channel either)."""
PAGE_NAME = "A viewer"


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str
    """queued | done | ignored (not meant for the bot) | refused | denied | limited"""
    reason: str = ""
    reply: str = ""

    def as_dict(self) -> dict[str, str]:
        out = {"status": self.status}
        if self.reason:
            out["reason"] = self.reason
        if self.reply:
            out["reply"] = self.reply
        return out


@dataclass(eq=False, slots=True)
class _Say:
    text: str
    msg: ChatMessage
    not_before: float


class ChatDesk:
    def __init__(
        self,
        channel: Conversation,
        cfg: ChatConfig,
        *,
        bot_nick: str | None = None,
        post: Callable[[str], object] | None = None,
        settled: Callable[[str], object] | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.channel = channel
        self.cfg = cfg
        self.name = channel.name
        self.bot_nick = bot_nick
        self._mention = bot_nick if cfg.mention else None
        self.post = post
        """Posts a line to the channel's IRC channel (None: the channel has no IRC)."""
        self.settled = settled
        """Told the `ref` of each IRC message the desk is done with (agents/front/chat_ledger.py)."""
        self.clock = clock
        self.moderation = Moderation(
            blocklist=cfg.blocklist,
            max_chars=channel.cfg.max_chat_chars,
            allow_links=cfg.allow_links,
            output_mode=cfg.output_filter,
            replacement=cfg.replacement,
        )
        self.queue = QuestionQueue(
            size=cfg.queue_size,
            interval_s=cfg.answer_interval_s,
            dedupe_s=cfg.dedupe_s,
            max_age_s=cfg.max_question_age_s,
            clock=clock,
            on_drop=self._question_dropped,
        )
        self.limit = PerUserLimit(cfg.per_user_s, clock)
        self.paused = False
        self.says: deque[_Say] = deque()
        self.counts: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.commands: Counter[str] = Counter()
        self.base_persona = quoting(channel.persona)
        """The channel's own character (`!persona default`), its prompt quoting viewers."""
        self._current: list[TurnHandle] = []
        self._current_msg: ChatMessage | None = None
        """The chat message on air (or starting to air) as `_current`; None once retracted."""
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._previous_filter: Callable[[str], str | None] | None = None

    # ------------------------------------------------------------------ life
    def start(self) -> None:
        """Take over the channel's chat: quoted prompts, the output filter, the pacing loop."""
        runner = self.channel.runner
        if runner is None:
            raise RuntimeError(f"channel {self.name} is not prepared; start the chat desk after it is on air")
        self.channel.persona = runner.persona = self.base_persona
        self._previous_filter = runner.output_filter
        runner.output_filter = self.moderation.filter_output
        self._task = asyncio.create_task(self._pump(), name=f"{self.name}:chat")

    async def aclose(self) -> None:
        """Stop taking chat (what is on air goes on); the channel gets its own output filter back."""
        if self.channel.runner is not None and self.channel.runner.output_filter == self.moderation.filter_output:
            self.channel.runner.output_filter = self._previous_filter
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    # ------------------------------------------------------------------ input
    def receive(self, msg: ChatMessage) -> Outcome:
        """A chat line from IRC: a request for the bot is handled, the rest of chat left alone."""
        if parse_request(without_cheers(msg), prefix=self.cfg.prefix, mention_nick=self._mention) is None:
            self.counts["ignored"] += 1
            outcome = Outcome("ignored")
        else:
            outcome = self._handle(msg, None)
        if outcome.status != "queued":
            self._settle(msg)
        return outcome

    def submit_page(self, text: str, mode: str = "ask", user: str = "") -> dict[str, str]:
        """The page's chat box: a command (with the prefix), else a question (ask) or a line to say."""
        msg = ChatMessage(
            text=text,
            login=f"page:{user or 'anonymous'}",
            display_name=PAGE_NAME,
            role=Role.named(self.cfg.page_role),
            source="page",
        )
        return self._handle(msg, "say" if mode == "say" else "ask").as_dict()

    def _handle(self, msg: ChatMessage, default: str | None) -> Outcome:
        try:
            text = self.moderation.check_input(without_cheers(msg))
        except Refused as exc:
            return self._refuse("refused", msg, f"refused: {exc}")
        request = parse_request(text, prefix=self.cfg.prefix, mention_nick=self._mention)
        if request is None:
            if default is None:
                self.counts["ignored"] += 1
                return Outcome("ignored")
            request = Request(default, text)
        if not allowed(request.command, msg.role, self.cfg):
            least = self.cfg.permission(request.command)
            return self._refuse("denied", msg, f"{self.cfg.prefix}{request.command} is for {least}s and up")
        if msg.role < Role.MODERATOR:
            wait = self.limit.check(msg.user_key)
            if wait > 0:
                return self._refuse("limited", msg, f"one request per {self.cfg.per_user_s:g} s; wait {wait:.0f} s")
        if request.command in NEEDS_TEXT and not request.arg:
            return self._reply(msg, f"usage: {self.cfg.prefix}{USAGE[request.command]}", status="refused")
        self.commands[request.command] += 1
        handler: Callable[[ChatMessage, Request], Outcome] = getattr(self, f"_cmd_{request.command}")
        return handler(msg, request)

    def _settle(self, msg: ChatMessage) -> None:
        if msg.ref and self.settled is not None:
            self.settled(msg.ref)

    def _refuse(self, status: str, msg: ChatMessage, reason: str) -> Outcome:
        self.dropped[status] += 1
        log.info("chat %s: dropped %s's line %r (%s)", self.name, msg.login, msg.text[:60], reason)
        return Outcome(status, reason)

    def _reply(self, msg: ChatMessage, text: str, status: str = "done") -> Outcome:
        if msg.source == "chat" and self.post is not None:
            self.post(f"@{msg.display_name} {text}")
        return Outcome(status, text if status != "done" else "", text)

    # ------------------------------------------------------------------ commands
    def _cmd_ask(self, msg: ChatMessage, req: Request) -> Outcome:
        try:
            question = self.queue.offer(msg, req.arg, self.cfg.broadcast_delay_s)
        except Refused as exc:
            self.dropped["repeat" if isinstance(exc, Repeat) else "full"] += 1
            log.info("chat %s: dropped %s's question %r (%s)", self.name, msg.login, req.arg[:60], exc)
            return Outcome("refused", str(exc))
        self._wake.set()
        return Outcome("queued", reply=f"question {question.seq} queued")

    def _cmd_say(self, msg: ChatMessage, req: Request) -> Outcome:
        if len(self.says) >= SAY_LANE:
            return self._refuse("refused", msg, f"{SAY_LANE} lines already wait to be said")
        self.says.append(_Say(req.arg, msg, self.clock() + self.cfg.broadcast_delay_s))
        self._wake.set()
        return Outcome("queued")

    def _cmd_skip(self, msg: ChatMessage, req: Request) -> Outcome:
        for turn in self._current:  # the answer may still wait behind its announce
            turn.interrupt(f"!skip by {msg.login}")
        stopped = self.channel.interrupt(f"!skip by {msg.login}")
        return Outcome("done", reply=f"stopped {len(stopped)}")

    def _cmd_pause(self, msg: ChatMessage, req: Request) -> Outcome:
        self.paused = True
        log.info("chat %s: paused by %s (%d questions wait)", self.name, msg.login, len(self.queue))
        return self._reply(msg, f"paused; {len(self.queue)} questions wait")

    def _cmd_resume(self, msg: ChatMessage, req: Request) -> Outcome:
        self.paused = False
        self._wake.set()
        return self._reply(msg, "answering again")

    def _cmd_persona(self, msg: ChatMessage, req: Request) -> Outcome:
        key = req.arg.split()[0].lower()
        if key == "default":
            persona = self.base_persona
        elif key in self.cfg.personas:
            persona = build_persona(self.base_persona, self.cfg.personas[key])
        else:
            known = ", ".join(["default", *sorted(self.cfg.personas)])
            return self._reply(msg, f"no persona {key!r}; try: {known}", status="refused")
        runner = self.channel.runner
        assert runner is not None
        self.channel.persona = runner.persona = persona
        log.info("chat %s: persona %s (by %s)", self.name, persona.name, msg.login)
        return self._reply(msg, f"now {persona.name}")

    def _cmd_clear(self, msg: ChatMessage, req: Request) -> Outcome:
        self.channel.memory.clear()
        return self._reply(msg, "memory cleared")

    def _cmd_dump(self, msg: ChatMessage, req: Request) -> Outcome:
        now = self.clock()
        held = [s for s in self.says if s.not_before > now]
        for s in held:
            self.says.remove(s)
            self._settle(s.msg)
            self.dropped["dumped"] += 1
            log.info("chat %s: dumped %s's line %r from the broadcast delay", self.name, s.msg.login, s.text[:60])
        n = len(held) + len(self.queue.drop_delayed())
        return self._reply(msg, f"dumped {n} from the delay")

    def _cmd_help(self, msg: ChatMessage, req: Request) -> Outcome:
        return self._reply(msg, help_text(self.cfg, msg.role, req.unknown))

    def retract(self, retraction: Retraction) -> int:
        """Moderation took chat back: what it covers leaves the queue and the say lane, and stops if
        it is on air (nothing of it is posted back). Returns how many items it took."""
        taken = len(self.queue.drop_where(lambda q: retraction.covers(q.msg), "retracted", retraction.why))
        for say in [s for s in self.says if retraction.covers(s.msg)]:
            self.says.remove(say)
            self._settle(say.msg)
            self.dropped["retracted"] += 1
            log.info("chat %s: dropped %s's line %r (%s)", self.name, say.msg.login, say.text[:60], retraction.why)
            taken += 1
        if self._current_msg is not None and retraction.covers(self._current_msg):
            self._current_msg = None
            for turn in self._current:
                self.channel.stop_turn(turn, f"retracted: {retraction.why}")
            self.dropped["retracted"] += 1
            taken += 1
        return taken

    def _question_dropped(self, q: Question, kind: str, why: str) -> None:
        self._settle(q.msg)
        self.dropped[kind] += 1
        log.info("chat %s: dropped %s's question %r (%s)", self.name, q.msg.login, q.text[:60], why)

    # ------------------------------------------------------------------ airing
    async def _pump(self) -> None:
        while True:
            job = self._next_job()
            if job is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._wait_s()):  # (wait_for can swallow a cancel on 3.11)
                        await self._wake.wait()
                continue
            try:
                await job
            except ChannelPaused as exc:  # paused between the check and the turn: rare, and said
                log.info("chat %s: a chat item was dropped: %s", self.name, exc)
            except Exception:
                log.exception("chat %s: airing a chat item failed", self.name)
            finally:
                self._current, self._current_msg = [], None

    def _next_job(self) -> Coroutine[Any, Any, None] | None:
        if self.channel.paused is not None:
            return None
        if self.says and self.says[0].not_before <= self.clock():
            return self._air_say(self.says.popleft())
        if not self.paused and (question := self.queue.pop()) is not None:
            return self._air_question(question)
        return None

    def _wait_s(self) -> float | None:
        waits = [] if self.paused else [self.queue.wait_s()]
        if self.says:
            waits.append(max(0.0, self.says[0].not_before - self.clock()))
        if self.channel.paused is not None:
            waits.append(CHANNEL_PAUSE_CHECK_S)
        known = [w for w in waits if w is not None]
        return min(known) if known else None

    async def _air_say(self, say: _Say) -> None:
        self._current_msg = say.msg
        try:
            turn = await self._start_current("say", say.text, say.msg)
            if turn is not None:
                await turn.finished.wait()
                self.counts["said"] += 1
        finally:
            self._settle(say.msg)

    async def _air_question(self, q: Question) -> None:
        try:
            await self._answer_question(q)
        finally:
            self._settle(q.msg)

    async def _answer_question(self, q: Question) -> None:
        self._current_msg = q.msg
        question = (self.moderation.filter_output(q.text) or "") if self.cfg.read_questions else ""
        announce = self.cfg.announce.format(name=q.msg.display_name, question=question)
        announce = self.moderation.filter_output(announce) or self.cfg.announce.format(name="someone", question="")
        if await self._start_current("say", announce, q.msg) is None:
            return
        answer = await self._start_current("answer", q.text, q.msg)
        if answer is None:
            return
        await answer.finished.wait()
        if self._current_msg is not q.msg:
            return  # retracted on air: it was cut, and nothing of it goes back to chat
        self.counts["answered"] += 1
        heard = answer.heard_text()
        log.info("chat %s: answered %s (%d chars heard)", self.name, q.msg.login, len(heard))
        if heard and self.cfg.reply_in_chat and self.post is not None:
            self.post(f"@{q.msg.display_name} {heard}" if q.msg.source == "chat" else heard)

    async def _start_current(self, kind: str, text: str, msg: ChatMessage) -> TurnHandle | None:
        """A turn airing `msg`'s item, kept in `_current` (where a retraction finds it); None, and
        stopped, if `msg` was retracted while the turn waited for room on the channel."""
        turn = await self._start_turn(kind, text, msg.display_name)
        self._current.append(turn)
        if self._current_msg is not msg:
            self.channel.stop_turn(turn, "retracted while it waited")
            return None
        return turn

    async def _start_turn(self, kind: str, text: str, user: str) -> TurnHandle:
        """A turn on the channel; while it is full of turns from elsewhere (page, voice), wait for one to end.

        The queue has already ordered chat by tier, so every chat turn has the same LLM priority:
        a mod's question on one channel does not overtake a viewer's on another."""
        while True:
            try:
                return self.channel.start_turn(kind, text, source="chat", user=user)
            except ChannelBusy:
                pending = next(iter(self.channel.turns.values()), None)
                if pending is not None:
                    await pending.finished.wait()

    # ------------------------------------------------------------------ info
    def stats(self) -> dict[str, Any]:
        return {
            "queue": len(self.queue),
            "queue_max": self.queue.high_water,
            "queue_size": self.cfg.queue_size,
            "says_waiting": len(self.says),
            "paused": self.paused,
            "persona": self.channel.persona.name,
            **self.counts,
            "commands": dict(self.commands),
            "dropped": dict(self.dropped),
        }
