"""Ending and safety of a case: the counselor's ``!close`` (with the client's
survey after it), ``!risk`` and ``!refer``; the client's ``erase``."""

from __future__ import annotations

import logging
from dataclasses import replace

from bridge.features.lifecycle.erase import erase
from bridge.kernel.commands import CLIENT, COUNSELOR, CommandEvent, Commands
from bridge.kernel.effects import OUTCOMES, RISKS
from e2ecounsel.casechannel import CaseEvent
from e2ecounsel.domain.text import parse_number

logger = logging.getLogger(__name__)

commands = Commands()


@commands.command(COUNSELOR, "close", case=True)
async def cmd_close(ev: CommandEvent) -> None:
    ctx, fx, client, args = ev.ctx, ev.fx, ev.client, ev.args
    eng, counselor = ev.the_case()
    outcome = args.split(maxsplit=1)[0].lower() if args else ""
    if outcome not in OUTCOMES:
        ev.reply("close.usage", ok=False)
        return
    note = args.split(maxsplit=1)[1].strip() if len(args.split(maxsplit=1)) > 1 else ""
    if note:
        fx.write(lambda: ctx.store.set_close_note(eng.id, note))
    clang = ctx.lang_of(client)
    if eng.room_id:
        fx.say(
            eng.room_id,
            ctx.render.text(clang, f"close.{OUTCOMES[outcome]}", counselor_name=counselor.name),
        )
    if OUTCOMES[outcome] == "continue":
        fx.write(ctx.audit_fn(counselor.user_id, "engagement.continue", eng.id))
        ev.reply("close.continued")
        return
    fx.write(lambda: ctx.store.close_engagement(eng.id, outcome))
    fx.write(ctx.audit_fn(counselor.user_id, "engagement.close", eng.id, detail=outcome))
    closed = CaseEvent("closed", eng.id, eng.room_id, {"outcome": OUTCOMES[outcome]})
    ev.reply("close.done", fact=closed, outcome=outcome)
    if client is not None and client.dm_room_id:
        rec = replace(client, pending={"kind": "survey", "engagement": eng.id})
        fx.write(lambda: ctx.store.save_client(rec))
        fx.say(client.dm_room_id, ctx.render.text(clang, "survey.ask"))
    if eng.room_id:
        fx.follow("lock", room=eng.room_id)
    fx.follow("drain", cause=f"close:{eng.id}")


@commands.command(COUNSELOR, "risk", case=True)
async def cmd_risk(ev: CommandEvent) -> None:
    ctx, fx, lang = ev.ctx, ev.fx, ev.lang
    eng, counselor = ev.the_case()
    level = ev.args.strip().lower()
    if level not in RISKS:
        ev.reply("risk.usage", ok=False)
        return
    fx.write(lambda: ctx.store.set_risk(eng.id, level))
    fx.write(ctx.audit_fn(counselor.user_id, "engagement.risk", eng.id, detail=level))
    fx.say(
        ev.reply_room,
        ctx.render.text(lang, "risk.set", level=ctx.render.text(lang, f"risk.{level}")),
        reader=counselor.user_id,
        case=CaseEvent("risk", eng.id, eng.room_id, {"risk": level}),
    )


@commands.command(COUNSELOR, "refer", case=True)
async def cmd_refer(ev: CommandEvent) -> None:
    ctx, fx, client = ev.ctx, ev.fx, ev.client
    eng, counselor = ev.the_case()
    target_id = ev.args.strip()
    if not target_id.startswith("@") or client is None:
        ev.reply("refer.usage", ok=False)
        return
    if target_id == counselor.user_id:
        ev.reply("refer.same", ok=False)
        return
    target = await ctx.store.get_counselor(target_id)
    if target is None or not target.active:
        ev.reply("refer.unknown", ok=False)
        return
    if not await ctx.has_room(target_id):
        ev.reply("refer.full", ok=False, counselor_name=target.name)
        return
    released = CaseEvent("released", eng.id, eng.room_id, {})
    ev.reply("refer.done", fact=released, counselor_name=target.name)
    fx.write(ctx.audit_fn(counselor.user_id, "engagement.refer", eng.id))
    fx.follow(
        "switch",
        client=client.user_id,
        target=target_id,
        share=eng.share_brief,
        cause=fx.cause,
        note_key="refer.client",
        incoming_key="refer.incoming",
    )


@commands.answer("survey")
async def answer_survey(ev: CommandEvent) -> None:
    """The client's score (1-5) after a close, then an optional comment."""
    ctx, fx, client, answer = ev.ctx, ev.fx, ev.the_client(), ev.answer
    pending = dict(ev.pending or {})
    declined = ctx.means(answer, "no") or ctx.means(answer, "skip")
    cleared = replace(client, pending=None)
    eng_id = int(pending.get("engagement", 0))
    if pending.get("step") == "comment":
        comment = None if declined else ev.text
        fx.write(lambda: ctx.store.record_survey(eng_id, int(pending["score"]), comment))
        fx.write(lambda: ctx.store.save_client(cleared))
        ev.say("survey.thanks")
        return
    score = parse_number(answer)
    if score is not None and 1 <= score <= 5:
        rec = replace(
            client,
            pending={"kind": "survey", "engagement": eng_id, "score": score, "step": "comment"},
        )
        fx.write(lambda: ctx.store.save_client(rec))
        ev.say("survey.comment")
    elif declined:
        fx.write(lambda: ctx.store.save_client(cleared))
        ev.say("survey.thanks")
    else:
        ev.say("survey.invalid")


@commands.command(CLIENT, "erase", always=True)
async def cmd_erase(ev: CommandEvent) -> None:
    """Asks first: erasing cannot be undone."""
    rec = replace(ev.the_client(), pending={"kind": "erase"})
    ev.fx.write(lambda: ev.ctx.store.save_client(rec))
    ev.say("erase.confirm")


@commands.answer("erase")
async def answer_erase(ev: CommandEvent) -> None:
    client = ev.the_client()
    if ev.ctx.means(ev.answer, "yes"):
        await erase(ev.ctx, ev.fx, client, ev.item)
    else:
        cleared = replace(client, pending=None)
        ev.fx.write(lambda: ev.ctx.store.save_client(cleared))
        ev.say("erase.cancelled")
