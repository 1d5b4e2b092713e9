"""The intake conversation in a client's DM: greeting, the state machine of
:mod:`e2ecounsel.domain.intake`, persisting each step, and handing a finished intake
to matching. A crisis phrase is never taken as an answer."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from bridge.kernel import dispatch
from bridge.kernel.commands import CLIENT
from bridge.kernel.effects import Effects
from bridge.persistence.inbox import InboxItem
from bridge.persistence.store import ClientRecord, Counselor
from e2ecounsel.domain import intake
from e2ecounsel.domain.replies import Reply
from e2ecounsel.domain.text import clean_text, normalize_command

if TYPE_CHECKING:
    from bridge.kernel.context import Context

logger = logging.getLogger(__name__)

#: Intake states after which a new message starts a new intake.
_NOT_STARTED = frozenset({intake.Stage.DECLINED, intake.Stage.AGE_REFUSED})
#: Stages whose step may offer counselors or name them (the offer is read from the
#: roster and caseloads only for these; the earlier questions need neither).
_OFFER_STAGES = frozenset(
    {
        intake.Stage.TOPIC,
        intake.Stage.COUNSELOR,
        intake.Stage.DONE,
        intake.Stage.PAUSED,
        intake.Stage.RECONSENT,
    }
)
#: Replies long enough to be sent in parts a phone screen holds (the consent).
LONG_REPLIES = frozenset({"intake.consent", "intake.reconsent"})


def one_message(replies: Sequence[Reply]) -> list[Reply]:
    """A questionnaire's introduction and its first question as one message
    (``intake.screening_start``), the scale shown once: one send, not two."""
    out: list[Reply] = []
    for reply in replies:
        prev = out[-1] if out else None
        if (
            prev is not None
            and prev.key == "intake.screening_intro"
            and reply.key == "intake.screening_item"
            and prev.params.get("instrument") == reply.params.get("instrument")
        ):
            out[-1] = Reply("intake.screening_start", {**prev.params, **reply.params})
        else:
            out.append(reply)
    return out


async def on_joined(ctx: Context, item: InboxItem) -> None:
    """The bot joined a DM: greet, or explain why it will not talk here."""
    fx = Effects(item.event_id)
    lang = ctx.policy.service.default_language
    if not item.encrypted:
        fx.say(item.room_id, ctx.render.text(lang, "intake.unencrypted"), plaintext_ok=True)
        await ctx.commit(fx, item.event_id)
        return
    client = await ctx.store.get_client(item.sender)
    fx.write(lambda: ctx.store.set_room(item.room_id, "dm", item.sender))
    if client is None or client.intake is None:
        step = intake.start(intake_context(ctx, ()))
        new = new_client(ctx, item.sender, item.room_id, client)
        new = replace(new, intake=step.state.to_dict())
        fx.write(lambda: ctx.store.save_client(new))
        for reply in step.replies:
            fx.say(item.room_id, ctx.render.reply(lang, reply))
    else:
        rec = replace(client, dm_room_id=item.room_id)
        fx.write(lambda: ctx.store.save_client(rec))
    await ctx.commit(fx, item.event_id)
    # The client's first message (a crisis, maybe) is then answered without first
    # reading the room's state: it is read now, after the greeting went out.
    await ctx.is_private_dm(item.room_id)


def new_client(ctx: Context, user_id: str, dm: str, old: ClientRecord | None) -> ClientRecord:
    return ClientRecord(
        user_id=user_id,
        dm_room_id=dm,
        language=old.language if old else None,
        consent_version=None,
        consented_at=None,
        intake=None,
        profile={},
        pending=None,
        created_at=ctx.clock().isoformat(),
    )


async def on_dm_message(ctx: Context, item: InboxItem) -> None:
    """A message in a client's DM: crisis first, then the intake or a command.

    A crisis phrase is never taken as an answer or a command: the client
    gets the crisis reply (and, mid-intake, a pointer back to the open
    question) and the intake stays where it was, so "I want to kill myself"
    can never become a pseudonym.
    """
    fx = Effects(item.event_id)
    client = await ctx.store.get_client(item.sender)
    lang = ctx.lang_of(client)
    if not item.encrypted:
        fx.say(item.room_id, ctx.render.text(lang, "intake.unencrypted"), plaintext_ok=True)
        await ctx.commit(fx, item.event_id)
        return
    if item.kind == "undecryptable":
        fx.say(item.room_id, ctx.render.text(lang, "trust.unsigned_device"))
        await ctx.commit(fx, item.event_id)
        return
    if not await ctx.is_private_dm(item.room_id):
        # Intake answers, status and bookings are personal: not where others read.
        country = client.profile.get("country") if client else None
        line = ctx.policy.crisis_line(lang, country)
        fx.say(item.room_id, ctx.render.text(lang, "dm.not_private", crisis_line=line))
        await ctx.commit(fx, item.event_id)
        return
    if len(item.body) > ctx.max_chars:
        fx.say(item.room_id, ctx.render.text(lang, "message_too_long"))
        await ctx.commit(fx, item.event_id)
        return
    text = clean_text(item.body, ctx.max_chars)
    if client is None or client.dm_room_id is None:
        client = (
            new_client(ctx, item.sender, item.room_id, client)
            if client is None
            else replace(client, dm_room_id=item.room_id)
        )
        fx.write(lambda: ctx.store.set_room(item.room_id, "dm", item.sender))
    state = intake_state(ctx, client)
    finished = state is not None and state.step is intake.Stage.DONE
    started = state is not None and state.step not in _NOT_STARTED
    screened = await ctx.features.crisis.screen(
        ctx, fx, client, text, room=item.room_id, where="dm", remember=True
    )
    command = dispatch.is_global(ctx, client, text)
    if screened is not None:
        if started and not finished and state is not None and screened.kind != "check":
            pause_intake(
                ctx, fx, screened.client, state, item, protocol=screened.kind == "protocol"
            )
    elif not finished and command is not None and command.id == "urgent":
        # `urgent` works from the first message on, not only after the intake.
        await dispatch.client_command(ctx, fx, client, text, item)
    elif finished and await returning(ctx, client, text):
        # Their counseling ended: a new message starts a new intake (consent and
        # screening again, as befits a new episode); commands still work.
        fresh = replace(client, intake=None, pending=None)
        await run_intake(ctx, fx, fresh, None, "", item)
    elif finished and changed_consent(ctx, client, state):
        # The service text changed since they agreed: they are asked again
        # before anything else, also in the middle of their counseling.
        await run_intake(ctx, fx, client, state, "", item)
    elif finished:
        await dispatch.client_command(ctx, fx, client, text, item)
    elif started and (client.pending is not None or command is not None):
        # A bare command that works everywhere (``erase``, ``status``, ``help``) typed
        # during the intake, or the answer to the question such a command asked: never
        # taken as an intake answer.
        if command is not None and command.id == "status":
            fx.say(item.room_id, ctx.render.text(lang, "status.intake"))
        else:
            await dispatch.client_command(ctx, fx, client, text, item)
    else:
        await run_intake(ctx, fx, client, state if started else None, text, item)
    if finished or (state is not None and state.step is intake.Stage.RECONSENT):
        await rejoin_if_left(ctx, fx, client)
    await ctx.commit(fx, item.event_id)


def pause_intake(
    ctx: Context,
    fx: Effects,
    client: ClientRecord,
    state: intake.IntakeState,
    item: InboxItem,
    *,
    protocol: bool,
) -> None:
    """After a crisis protocol mid-intake the questions wait: the client is told a
    counselor is being asked to come and chooses to go on now or later (a paused intake stays
    paused). Otherwise the client is pointed back to the open question."""
    step = intake.pause(state) if protocol else intake.Step(state)
    lang = ctx.policy.language(state.language or client.language)
    if step.state == state:
        if state.step is not intake.Stage.PAUSED:  # before consent: point back to the question
            fx.say(item.room_id, ctx.render.text(lang, "status.intake"))
        return
    for reply in one_message(step.replies):
        fx.say(item.room_id, ctx.render.reply(lang, reply, country=state.country))
    held = replace(client, intake=step.state.to_dict(), profile={**client.profile, "crisis": True})
    fx.write(lambda: ctx.store.save_client(held))


def changed_consent(ctx: Context, client: ClientRecord, state: intake.IntakeState | None) -> bool:
    """Whether the text the client agreed to has changed since.

    Each language has its own consent text and version. A client who agreed in
    one language and later switches to another did not agree to a changed text,
    so only a version that is no longer current in any language asks again.
    """
    if state is None:
        return False
    if state.consent_version in {c.version for c in ctx.policy.consent.values()}:
        return False
    version = ctx.policy.consent[ctx.lang_of(client)].version
    return intake.needs_reconsent(state, version)


async def rejoin_if_left(ctx: Context, fx: Effects, client: ClientRecord) -> None:
    """A client who left their session room is invited again when they next write.

    While the synced room still lists them (joined or invited) nothing is to be
    done, so an ordinary message costs no membership lookup; a room not loaded
    since a lazy restart is checked by the follow-up itself.
    """
    eng = await ctx.store.current_engagement(client.user_id)
    if eng is None or eng.status != "active" or not eng.room_id:
        return
    members = ctx.matrix.synced_members(eng.room_id)
    if members is not None and client.user_id in members:
        return
    fx.follow("reinvite", room=eng.room_id, client=client.user_id)


async def returning(ctx: Context, client: ClientRecord, text: str) -> bool:
    """A former client writing something that is not a command or an answer."""
    word = normalize_command(text)[0]
    if client.pending is not None or ctx.commands.find(ctx, CLIENT, word, ctx.lang_of(client)):
        return False
    return await ctx.store.current_engagement(client.user_id) is None


def intake_state(ctx: Context, client: ClientRecord) -> intake.IntakeState | None:
    if client.intake is None:
        return None
    try:
        return intake.IntakeState.from_dict(client.intake)
    except intake.InvalidState:
        logger.warning("stored intake state unreadable; restarting intake")
        return None


def intake_context(ctx: Context, offer: tuple[str, ...]) -> intake.IntakeContext:
    p = ctx.policy
    specs = [p.instruments[inst_id].spec() for inst_id in p.service.screening]
    return intake.IntakeContext(
        languages=p.languages,
        min_age=p.service.min_age,
        instruments=tuple(specs),
        countries=tuple(c.code for c in p.crisis.countries),
        zones={c.code: tuple(z.zone for z in c.zones) for c in p.crisis.countries if c.zones},
        topics=tuple(t.id for t in p.service.topics),
        counselor_options=offer,
        max_chars=ctx.max_chars,
        consent_version="",  # set per language below
        vocabulary=p.answer_words(),
    )


async def counselor_offer(
    ctx: Context, language: str | None
) -> tuple[tuple[str, ...], dict[str, Counselor]]:
    counselors = await ctx.store.list_counselors(active_only=True)
    loads = await ctx.store.caseloads(dormant_after_days=ctx.policy.service.dormant_after_days)
    open_ = [
        c
        for c in counselors
        if loads.get(c.user_id, 0) < c.capacity and (language is None or language in c.languages)
    ]
    return tuple(c.user_id for c in open_), {c.user_id: c for c in counselors}


def decide_step(
    ctx: Context,
    state: intake.IntakeState | None,
    text: str,
    offer: tuple[str, ...],
    lang_now: str | None,
) -> tuple[intake.IntakeContext, intake.Step]:
    """The intake's next step for ``text`` (pure: the offer of counselors is handed in)."""
    ictx = intake_context(ctx, offer)
    version_lang = lang_now or ctx.policy.service.default_language
    ictx = replace(ictx, consent_version=ctx.policy.consent[version_lang].version)
    if state is None:
        step = intake.start(ictx)
        if text:
            # A first message picks the language if it names one ("1", "2"); anything
            # else ("hi", "start", "help") is greeted with the question.
            probe = intake.advance(step.state, text, ictx)
            if probe.state.step is not intake.Stage.LANGUAGE:
                step = probe
    elif intake.needs_reconsent(state, ictx.consent_version) and state.step not in (
        intake.Stage.LANGUAGE,
        intake.Stage.CONSENT,
        intake.Stage.RECONSENT,
    ):
        step = intake.begin_reconsent(state, ictx)
    else:
        step = intake.advance(state, text, ictx)
    return ictx, step


async def run_intake(
    ctx: Context,
    fx: Effects,
    client: ClientRecord,
    state: intake.IntakeState | None,
    text: str,
    item: InboxItem,
) -> None:
    lang_now = state.language if state and state.language else None
    offer: tuple[str, ...] = ()
    known: dict[str, Counselor] = {}
    needs_offer = state is None or state.step in _OFFER_STAGES
    if needs_offer:
        offer, known = await counselor_offer(ctx, lang_now)
    ictx, step = decide_step(ctx, state, text, offer, lang_now)
    if not needs_offer and step.state.step in _OFFER_STAGES:
        # The step reaches the counselor choice: decided again with who is free now.
        offer, known = await counselor_offer(ctx, lang_now)
        ictx, step = decide_step(ctx, state, text, offer, lang_now)
    new_state = step.state
    lang = ctx.policy.language(new_state.language or client.language)
    if new_state.language and new_state.consent_version is None:
        # The consent version depends on the language just chosen.
        ictx = replace(ictx, consent_version=ctx.policy.consent[lang].version)
        if step.replies and step.replies[-1].key == "intake.consent":
            step = replace(
                step,
                replies=(
                    *step.replies[:-1],
                    Reply("intake.consent", {"version": ictx.consent_version}),
                ),
            )
    country = new_state.country
    crisis_first = [e for e in step.events if isinstance(e, intake.CrisisDetected)]
    profile = dict(client.profile)
    record = replace(client, language=new_state.language or client.language)
    for crisis_event in crisis_first:
        await ctx.features.crisis.protocol(
            ctx, fx, record, crisis_event.reason, reply_room=item.room_id
        )
        profile["crisis"] = True
    for reply in one_message(step.replies):
        fx.say(
            item.room_id,
            ctx.render.reply(lang, reply, country=country, counselors=known),
            parts=reply.key in LONG_REPLIES,
        )
    declined = False
    complete = False
    for event in step.events:
        if isinstance(event, intake.ConsentGiven):
            record = replace(
                record, consent_version=event.version, consented_at=ctx.clock().isoformat()
            )
            fx.write(ctx.audit_fn(client.user_id, "consent.given", detail=event.version[:16]))
        elif isinstance(event, intake.ConsentDeclined):
            declined = True
            fx.write(ctx.audit_fn(client.user_id, "consent.declined"))
        elif isinstance(event, intake.AgeRefused):
            declined = True
            fx.write(ctx.audit_fn(client.user_id, "intake.age_refused"))
        elif isinstance(event, intake.InstrumentScored):
            scores = dict(profile.get("scores", {}))
            scores[event.instrument] = {"score": event.score, "severity": event.severity}
            profile["scores"] = scores
        elif isinstance(event, intake.IntakeComplete):
            complete = True
    if declined:
        if await ctx.store.engagements_of_client(client.user_id):
            # Declining a changed consent mid-counseling: everything goes,
            # rooms and messages included, as an erasure does.
            await ctx.features.lifecycle.erase(ctx, fx, client, item)
            return
        # Nothing stays about a person who said no, only the audit line.
        fx.write(lambda: ctx.store.delete_client(client.user_id))
        return
    profile.update(
        {
            "pseudonym": new_state.pseudonym,
            "country": new_state.country,
            "zone": new_state.zone,
            "topic": new_state.topic,
            "preferred": new_state.counselor,
            "answers": [list(a) if a is not None else None for a in new_state.answers],
        }
    )
    if new_state.crisis:
        profile["crisis"] = True
    record = replace(
        record,
        intake=new_state.to_dict(),
        profile=profile,
        dm_room_id=record.dm_room_id or item.room_id,
    )
    fx.write(lambda: ctx.store.save_client(record))
    if complete:
        fx.write(ctx.audit_fn(client.user_id, "intake.complete"))
        # Placement is recorded with the last answer and the client record, so
        # a crash right after this step cannot lose the finished intake.
        fx.follow("place", client=client.user_id, cause=f"place:{item.event_id}")
