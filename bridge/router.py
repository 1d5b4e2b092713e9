"""The router: every inbox item to the feature it is for, after the checks that
come before any feature.

Only an event that was decrypted and comes from a device its owner
cross-signed can change anything; an edit is never taken as a new answer. The
room says what the message is: a client's DM (intake, commands, bookings), a
session room (who is waiting, crisis triage, a counselor's ``!`` command, an
answer to a booking offer), a counselor's case channel, the supervisors' room.

The router also builds the one :class:`~bridge.kernel.context.Context` the
features share, with their ports, follow-ups and commands.

Every handler follows one pattern, which is what makes the bot safe to crash:

1. read what it needs;
2. in ONE database transaction (:class:`bridge.kernel.work.Work`): write the
   new state, queue every message to send in the outbox (with a transaction id
   derived from the triggering event id), record every follow-up (placing a
   client, creating, retiring or leaving a room), and mark the event handled;
3. flush the outbox and run the follow-ups, which are retried until done.

A replayed event is skipped at step 1; a crash after step 2 is finished by the
outbox flush and the follow-ups at the next start. The homeserver drops a
repeated transaction id and a room is created with a marker that finds it
again after a crash, so nothing is ever sent or created twice.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime

from bridge.features import (
    booking,
    cadence,
    crisis,
    intake,
    lifecycle,
    placement,
    status,
    supervision,
)
from bridge.kernel import dispatch
from bridge.kernel.commands import FollowUpHandler as FeatureFollowUp
from bridge.kernel.commands import Registry
from bridge.kernel.context import Context, Live
from bridge.kernel.effects import Effects, txn_id
from bridge.kernel.matrix import Matrix
from bridge.kernel.ports import Features
from bridge.kernel.render import Renderer
from bridge.kernel.work import CrashPoint, FollowUpHandler, SendQueued, Work, no_crash
from bridge.persistence.bookings import Bookings
from bridge.persistence.inbox import InboxItem
from bridge.persistence.pages import Pages
from bridge.persistence.store import BridgeStore
from bridge.scheduler import DurableScheduler
from e2ecounsel.domain.text import clean_text
from e2ecounsel.matrix.trust import TrustPolicy
from e2ecounsel.policy import Policy

logger = logging.getLogger(__name__)

#: Every feature's commands, answers and follow-ups.
FEATURES = (
    booking.commands,
    cadence.commands,
    crisis.commands,
    lifecycle.commands,
    placement.commands,
    status.commands,
    supervision.commands,
)


class Router:
    """Builds the context and routes each inbox item; Matrix, database, policy and clock
    are handed in."""

    def __init__(
        self,
        matrix: Matrix,
        store: BridgeStore,
        policy: Policy,
        scheduler: DurableScheduler,
        *,
        supervisors_room: str | None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        mark_done: Callable[[str], Awaitable[None]] | None = None,
        flush: Callable[[set[str] | None], Awaitable[None]] | None = None,
        flush_later: Callable[[set[str]], None] | None = None,
        send_queued: SendQueued | None = None,
        trust: TrustPolicy | None = None,
        look_up: Callable[[list[str]], Awaitable[object]] | None = None,
        crash_point: CrashPoint = no_crash,
    ) -> None:
        self.trust = trust
        #: Looks the devices of these users up again (a sender's device not seen before).
        self.look_up = look_up
        work = Work(
            store,
            txn_id=txn_id,
            mark_done=mark_done,
            flush=flush,
            flush_later=flush_later,
            send_queued=send_queued,
            crash_point=crash_point,
        )
        self.ctx = Context(
            matrix=matrix,
            store=store,
            policy=policy,
            render=Renderer(policy),
            clock=clock,
            work=work,
            pages=Pages(store.db, clock=clock),
            bookings=Bookings(store),
            scheduler=scheduler,
            detector=policy.crisis.detector(),
            commands=Registry(FEATURES),
            features=Features(crisis=crisis, lifecycle=lifecycle, cadence=cadence),
            crash_point=crash_point,
            live=Live(supervisors_room=supervisors_room),
            flush=flush,
        )
        for kind, handler in self.ctx.commands.follow_ups.items():
            work.handle(kind, self._bound(handler))
        self.cadence = cadence.Cadence(self.ctx)
        self.cadence.register()

    def _bound(self, handler: FeatureFollowUp) -> FollowUpHandler:
        ctx = self.ctx
        return lambda payload: handler(ctx, payload)

    async def handle(self, item: InboxItem, *, unhandled: bool = False) -> None:
        """Handle one inbox item; never raises (a failure is logged by id).

        ``unhandled``: the caller read the item as not handled yet (the inbox's
        pending rows), so it is not asked again; otherwise a replay is skipped here.

        Before anything else: only an event that was decrypted and comes from a
        device its owner cross-signed can change anything. Anyone holding a
        client's access token can post into their encrypted DM in clear, and
        an unverified device may not be theirs at all; both get the plain
        "your device is not verified" answer and nothing else. An edit of an
        earlier message is never taken as a new answer or command.
        """
        ctx = self.ctx
        if not unhandled and await ctx.store.is_handled(item.event_id):
            return
        kind = await ctx.store.room_kind(item.room_id)
        room_kind = kind[0] if kind else None
        if item.room_id == ctx.live.supervisors_room:
            room_kind = "supervisors"
        if item.kind == "joined":
            await intake.on_joined(ctx, item)
            return
        if item.sender == ctx.bot:
            await ctx.commit(Effects(item.event_id), item.event_id)
            return
        trusted = item.kind not in ("text", "edit") or await self.sender_trusted(item)
        if room_kind == "session":
            await self.on_session_message(item, trusted=trusted)
        elif room_kind is None and await ctx.pages.is_page_room(item.room_id):
            await ctx.commit(Effects(item.event_id), item.event_id)  # people talk; the bot listens
        elif not trusted and (item.encrypted or room_kind in ("case", "supervisors")):
            fx = Effects(item.event_id)
            ctx.refuse_untrusted(fx, item, await self._sender_lang(item, room_kind))
            await ctx.commit(fx, item.event_id)
        elif item.kind == "edit":
            fx = Effects(item.event_id)
            if room_kind in (None, "dm"):
                lang = await self._sender_lang(item, room_kind)
                fx.say(item.room_id, ctx.render.text(lang, "edit.ignored"))
            await ctx.commit(fx, item.event_id)
        elif room_kind == "supervisors":
            await dispatch.supervisor_message(ctx, item)
        elif room_kind == "case":
            await dispatch.case_message(ctx, item)
        else:
            await intake.on_dm_message(ctx, item)

    async def sender_trusted(self, item: InboxItem) -> bool:
        """True if ``item`` was decrypted and its sending device is cross-signed by its owner.

        The device is the one whose Curve25519 identity key the room key came
        from (``sender_key``). A device not seen before (a new login since the
        last key query) is looked up once more before it is refused. With the
        ``permissive`` trust mode the operator chose to accept unsigned
        devices, so a decrypted event is enough.
        """
        if not item.decrypted or not item.sender_key:
            return False
        if self.trust is None or self.trust.mode == "permissive":
            return True
        if self.trust.is_sender_key_trusted(item.sender, item.sender_key):
            return True
        if self.look_up is None:
            return False
        try:
            await self.look_up([item.sender])
        except Exception:
            logger.warning("device look-up for a sender in %s failed", item.room_id)
            return False
        return self.trust.is_sender_key_trusted(item.sender, item.sender_key)

    async def _sender_lang(self, item: InboxItem, room_kind: str | None) -> str:
        ctx = self.ctx
        if room_kind == "case":
            counselor = await ctx.store.counselor_by_case_room(item.room_id)
            if counselor is not None:
                return ctx.counselor_lang(counselor)
        return ctx.lang_of(await ctx.store.get_client(item.sender))

    async def on_session_message(self, item: InboxItem, *, trusted: bool = True) -> None:
        """A message in a session room: note who is waiting, watch for a crisis, run commands.

        Only a client's words can start the crisis protocol (a counselor may
        well write "self-harm" while working). A line starting with ``!`` from
        the room's counselor is a command for this room's engagement: it is
        carried out, redacted here and answered in the counselor's case
        channel (see :func:`bridge.kernel.dispatch.session_command`). The
        client trying a counselor command gets a polite refusal; other ``!``
        lines are just chat. Waiting time counts from metadata, so it is
        noted even for a message the bot may not act on; anything else needs
        a trusted sender.
        """
        ctx = self.ctx
        fx = Effects(item.event_id)
        eng = await ctx.store.engagement_by_room(item.room_id)
        if eng is None:
            await ctx.commit(fx, item.event_id)
            return
        role = (
            "client"
            if item.sender == eng.client_id
            else ("counselor" if item.sender == eng.counselor_id else None)
        )
        if role is not None and eng.status == "active" and item.kind != "edit":
            fx.write(lambda: ctx.store.record_message(item.room_id, role=role, ts_ms=item.ts))
            if role == "client":
                fx.follow("sla", room=item.room_id)
        if item.kind != "text":
            await ctx.commit(fx, item.event_id)
            return
        client = await ctx.store.get_client(eng.client_id)
        if not trusted:
            counselor = await ctx.store.get_counselor(item.sender) if role == "counselor" else None
            if counselor is not None:
                # Said to the counselor where the client cannot read it.
                note = replace(item, room_id=await ctx.case_room(counselor))
                ctx.refuse_untrusted(fx, note, ctx.counselor_lang(counselor))
            else:
                ctx.refuse_untrusted(fx, item, ctx.lang_of(client))
            await ctx.commit(fx, item.event_id)
            return
        text = clean_text(item.body, ctx.max_chars)
        # A crisis matter (or the answer to a check question) is neither a command nor an
        # answer to a booking question.
        screened = None
        if role == "client" and client is not None:
            screened = await crisis.screen(
                ctx, fx, client, text, room=item.room_id, where="session"
            )
        if screened is None and text.startswith("!"):
            await dispatch.session_command(ctx, fx, eng, client, item, text)
        elif screened is None and role == "client" and client is not None:
            await booking.answer_in_session(ctx, fx, client, text, item.room_id)
        await ctx.commit(fx, item.event_id)
