"""Reply rounds made visible and kept: digests, SLA reminders, escalations,
booking reminders and retention, as durable jobs.

Each job's target is the room its message goes to, so a "while I was
offline" summary groups late jobs per recipient. Handlers re-check the state
when they fire (a reminder for a client who was answered meanwhile says
nothing), and every job key names its cause, so planning twice is harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from bridge.kernel import rooms
from bridge.kernel.effects import message_content
from bridge.kernel.timefmt import client_zone, when, windows_of
from bridge.persistence.bookings import Booking
from bridge.persistence.inbox import Inbox
from bridge.persistence.jobs import Job
from bridge.persistence.pruning import prune_operational
from bridge.persistence.store import ABOUT, Counselor, Engagement
from bridge.scheduler import Message
from e2ecounsel.casechannel import CaseEvent, attach
from e2ecounsel.domain.cadence import next_window

if TYPE_CHECKING:
    from bridge.kernel.context import Context

logger = logging.getLogger(__name__)


def notice(body: str, *, mention: str | None = None) -> dict[str, Any]:
    """A reminder or digest: an ``m.text`` people notice (see :func:`message_content`)."""
    return message_content(body, mention=mention)


class Cadence:
    """Plans and fires the bridge's timed messages."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.scheduler = ctx.scheduler
        self.bookings = ctx.bookings
        self.store = ctx.store
        self.policy = ctx.policy
        self.render = ctx.render

    def register(self) -> None:
        """Fire this feature's jobs from the scheduler (once, when the bridge starts)."""
        self.scheduler.summarize = self.summarize
        for kind, handler in (
            ("sla.remind", self.fire_sla_remind),
            ("sla.escalate", self.fire_sla_escalate),
            ("digest", self.fire_digest),
            ("booking.remind", self.fire_booking_remind),
            ("booking.start", self.fire_booking_start),
            ("retention.purge", self.fire_retention),
            ("notice", self.fire_notice),
            ("sla.offer", self.fire_sla_offer),
        ):
            self.scheduler.handle(kind)(handler)

    # ------------------------------------------------------------------ planning

    async def plan_all(self, now: datetime) -> None:
        """At start and after roster changes: next digest per counselor, daily purge."""
        for c in await self.store.list_counselors(active_only=True):
            await self.plan_digest(c, now)
        tomorrow = (now + timedelta(days=1)).replace(hour=3, minute=0, second=0, microsecond=0)
        await self.scheduler.schedule(
            "retention.purge", tomorrow, "system", key=f"retention:{tomorrow:%Y-%m-%d}"
        )

    async def plan_digest(self, c: Counselor, now: datetime) -> None:
        if not c.case_room_id:
            return
        _, days_off = await self.bookings.schedule_of(c.user_id)
        try:
            due = next_window(now, windows_of(c, days_off))
        except ValueError:
            logger.warning("counselor has unusable reply windows; no digests planned")
            return
        if due is None:
            return
        await self.scheduler.schedule(
            "digest",
            due,
            c.case_room_id,
            key=f"digest:{c.user_id}:{due.isoformat()}",
            payload={"counselor": c.user_id},
        )

    async def on_client_message(self, eng: Engagement) -> None:
        """A client started waiting: plan the SLA reminder and the escalation."""
        if eng.awaiting_since is None or eng.counselor_id is None:
            return
        since = datetime.fromtimestamp(eng.awaiting_since / 1000, UTC)
        counselor = await self.store.get_counselor(eng.counselor_id)
        if counselor is None:
            return
        svc = self.policy.service
        case_room = counselor.case_room_id or await self.ctx.case_room(counselor)
        base = f"sla:{eng.id}:{eng.awaiting_since}"
        payload = {"engagement": eng.id, "since": eng.awaiting_since}
        await self.scheduler.schedule(
            "sla.remind",
            since + timedelta(hours=svc.sla_hours),
            case_room,
            key=f"{base}:remind",
            payload=payload,
        )
        client = await self.store.get_client(eng.client_id)
        if svc.reassign_hours > 0 and client is not None and client.dm_room_id:
            # The client decides: we only offer another counselor; nothing moves by itself.
            await self.scheduler.schedule(
                "sla.offer",
                since + timedelta(hours=svc.reassign_hours),
                client.dm_room_id,
                key=f"{base}:offer",
                payload=payload,
            )
        if self.ctx.live.supervisors_room:
            await self.scheduler.schedule(
                "sla.escalate",
                since + timedelta(hours=svc.escalate_hours),
                self.ctx.live.supervisors_room,
                key=f"{base}:escalate",
                payload=payload,
            )

    async def on_booked(self, booking: Booking, eng: Engagement, counselor: Counselor) -> None:
        """Reminders to both sides before the start, and a note when it starts."""
        case_room = counselor.case_room_id or await self.ctx.case_room(counselor)
        assert eng.room_id is not None
        payload = {"booking": booking.id}
        now = self.ctx.clock()
        for offset in self.policy.service.booking.reminder_offsets:
            label = int(offset.total_seconds())
            due = booking.starts_at - offset
            if due <= now:
                continue  # booked later than this reminder would have come: nothing to remind
            await self.scheduler.schedule(
                "booking.remind",
                due,
                eng.room_id,
                key=f"booking:{booking.id}:{label}:client",
                payload={**payload, "side": "client", "offset": label},
            )
            await self.scheduler.schedule(
                "booking.remind",
                due,
                case_room,
                key=f"booking:{booking.id}:{label}:counselor",
                payload={**payload, "side": "counselor", "offset": label},
            )
        await self.scheduler.schedule(
            "booking.start",
            booking.starts_at,
            eng.room_id,
            key=f"booking:{booking.id}:start",
            payload=payload,
        )

    async def on_cancelled(self, booking_id: int) -> None:
        await self.scheduler.cancel(f"booking:{booking_id}:")

    # ------------------------------------------------------------------ helpers

    async def _pseudonym(self, eng: Engagement) -> str:
        client = await self.store.get_client(eng.client_id)
        return str((client.profile or {}).get("pseudonym") or "?") if client else "?"

    def starts_in(self, lang: str, seconds: int) -> str:
        if seconds >= 3600:
            return self.render.text(lang, "reminder.in_hours", hours=round(seconds / 3600))
        return self.render.text(lang, "reminder.in_minutes", minutes=max(1, round(seconds / 60)))

    def _late(self, lang: str, job: Job, now: datetime, tz: ZoneInfo) -> str:
        grace = timedelta(seconds=self.policy.service.misfire.grace_seconds)
        if now - job.due > grace:
            return "\n" + self.render.text(lang, "reminder.late", when=when(job.due, tz))
        return ""

    # ------------------------------------------------------------------ handlers

    async def _still_waiting(self, job: Job) -> tuple[Engagement, Counselor] | None:
        """The engagement of an SLA job if its client still waits since the same message;
        None when they were answered, or the engagement was closed or erased meanwhile."""
        eng = await self.store.get_engagement(int(job.payload["engagement"]))
        if eng is None or eng.status != "active" or eng.awaiting_since != job.payload["since"]:
            return None
        counselor = await self.store.get_counselor(eng.counselor_id or "")
        if counselor is None or eng.room_id is None:
            return None
        return eng, counselor

    async def fire_sla_remind(self, job: Job, now: datetime) -> Sequence[Message]:
        waiting = await self._still_waiting(job)
        if waiting is None:
            return []
        eng, counselor = waiting
        assert eng.room_id is not None
        lang = self.ctx.counselor_lang(counselor)
        body = self.render.text(
            lang,
            "sla.reminder",
            pseudonym=await self._pseudonym(eng),
            hours=self._fmt_hours(self.policy.service.sla_hours),
            room_link=rooms.room_link(eng.room_id),
        )
        fact = CaseEvent(
            "reminder", eng.id, eng.room_id, {"reason": "sla", "since_ms": eng.awaiting_since}
        )
        content = {**notice(body, mention=counselor.user_id), ABOUT: eng.client_id}
        return [(job.target, attach(content, fact))]

    async def fire_sla_offer(self, job: Job, now: datetime) -> Sequence[Message]:
        waiting = await self._still_waiting(job)
        if waiting is None:
            return []
        eng, _ = waiting
        client = await self.store.get_client(eng.client_id)
        lang = self.ctx.lang_of(client)
        hours = self._fmt_hours(self.policy.service.reassign_hours)
        return [(job.target, notice(self.render.text(lang, "sla.offer_switch", hours=hours)))]

    async def fire_sla_escalate(self, job: Job, now: datetime) -> Sequence[Message]:
        waiting = await self._still_waiting(job)
        if waiting is None:
            return []
        eng, counselor = waiting
        assert eng.room_id is not None
        body = self.render.text(
            self.policy.service.default_language,
            "sla.escalation",
            counselor_name=counselor.name,
            hours=self._fmt_hours(self.policy.service.escalate_hours),
            room_link=rooms.room_link(eng.room_id),
        )
        return [(job.target, notice(body))]

    @staticmethod
    def _fmt_hours(h: float) -> str:
        return str(int(h)) if float(h).is_integer() else f"{h:g}"

    async def fire_digest(self, job: Job, now: datetime) -> Sequence[Message]:
        counselor = await self.store.get_counselor(str(job.payload["counselor"]))
        if counselor is None or not counselor.active:
            return []
        await self.plan_digest(counselor, max(now, job.due) + timedelta(seconds=1))
        lang = self.ctx.counselor_lang(counselor)
        now_ms = int(now.timestamp() * 1000)
        waiting = [
            e for e in await self.store.active_for_counselor(counselor.user_id) if e.awaiting_since
        ]
        if not waiting:
            return []
        waiting.sort(key=lambda e: (e.risk != "high", e.awaiting_since or 0))
        lines = [self.render.text(lang, "digest.header", count=len(waiting))]
        for e in waiting:
            hours = (now_ms - (e.awaiting_since or now_ms)) / 3_600_000
            lines.append(
                self.render.text(
                    lang,
                    "digest.line",
                    pseudonym=await self._pseudonym(e),
                    waiting=f"{int(hours)} h {int((hours % 1) * 60)} m",
                    risk=self.render.text(lang, f"risk.{e.risk}"),
                    room_link=rooms.room_link(e.room_id or ""),
                )
            )
        fact = CaseEvent(
            "digest",
            data={
                "waiting": [
                    {
                        "engagement": e.id,
                        "room": e.room_id,
                        "since_ms": e.awaiting_since,
                        "risk": e.risk,
                    }
                    for e in waiting
                ]
            },
        )
        return [(job.target, attach(notice("\n".join(lines)), fact))]

    async def fire_booking_remind(self, job: Job, now: datetime) -> Sequence[Message]:
        booking = await self.bookings.get(int(job.payload["booking"]))
        if booking is None or booking.status != "booked" or booking.starts_at <= now:
            return []
        eng = await self.store.get_engagement(booking.engagement_id)
        counselor = await self.store.get_counselor(booking.counselor_id)
        if eng is None or counselor is None or eng.room_id is None:
            return []
        seconds = int((booking.starts_at - now).total_seconds())
        if job.payload["side"] == "client":
            client = await self.store.get_client(eng.client_id)
            lang = self.ctx.lang_of(client)
            tz = client_zone(client, counselor)
            body = self.render.text(
                lang,
                "reminder.client",
                counselor_name=counselor.name,
                starts_in=self.starts_in(lang, seconds),
                when=when(booking.starts_at, tz),
            ) + self._late(lang, job, now, tz)
        else:
            lang = self.ctx.counselor_lang(counselor)
            tz = ZoneInfo(counselor.timezone)
            body = self.render.text(
                lang,
                "reminder.counselor",
                pseudonym=await self._pseudonym(eng),
                starts_in=self.starts_in(lang, seconds),
                when=when(booking.starts_at, tz),
                room_link=rooms.room_link(eng.room_id),
            ) + self._late(lang, job, now, tz)
            fact = CaseEvent(
                "reminder",
                eng.id,
                eng.room_id,
                {"reason": "booking", "booking": booking.id, "due": booking.starts_at.isoformat()},
            )
            content = {**notice(body, mention=counselor.user_id), ABOUT: eng.client_id}
            return [(job.target, attach(content, fact))]
        return [(job.target, notice(body, mention=eng.client_id))]

    async def fire_booking_start(self, job: Job, now: datetime) -> Sequence[Message]:
        booking = await self.bookings.get(int(job.payload["booking"]))
        if booking is None or booking.status != "booked":
            return []
        eng = await self.store.get_engagement(booking.engagement_id)
        counselor = await self.store.get_counselor(booking.counselor_id)
        if eng is None or counselor is None:
            return []
        client = await self.store.get_client(eng.client_id)
        lang = self.ctx.lang_of(client)
        return [
            (
                job.target,
                notice(self.render.text(lang, "reminder.starting", counselor_name=counselor.name)),
            )
        ]

    async def fire_notice(self, job: Job, now: datetime) -> Sequence[Message]:
        """A scheduled notice whose (sealed) text was fixed when it was planned."""
        return [(job.target, notice(str(job.payload["body"])))]

    async def fire_retention(self, job: Job, now: datetime) -> Sequence[Message]:
        purged = await self.purge(now)
        logger.info("retention: %d closed engagement record(s) purged", purged)
        pruned = await prune_operational(
            self.store,
            Inbox(self.store.db),
            self.scheduler.jobs,
            operational_days=self.policy.service.retention.operational_days,
        )
        logger.info(
            "retention: pruned %d inbox, %d outbox, %d job, %d follow-up row(s), %d marker(s)",
            pruned.inbox,
            pruned.outbox,
            pruned.jobs,
            pruned.followups,
            pruned.markers,
        )
        nxt = (now + timedelta(days=1)).replace(hour=3, minute=0, second=0, microsecond=0)
        await self.scheduler.schedule(
            "retention.purge", nxt, "system", key=f"retention:{nxt:%Y-%m-%d}"
        )
        return []

    async def purge(self, now: datetime) -> int:
        """Forget clients whose engagements all closed longer ago than retention allows.

        Retention is per country (record-keeping law differs); only the
        content-free audit lines stay.
        """
        retention = self.policy.service.retention
        purged = 0
        for client_id, last_closed in await self.store.closed_clients():
            client = await self.store.get_client(client_id)
            if client is None:
                continue
            days = retention.days_for((client.profile or {}).get("country"))
            if datetime.fromisoformat(last_closed) + timedelta(days=days) <= now:
                await self.store.audit(client.user_id, "retention.purge")
                await self.store.delete_client(client.user_id)
                purged += 1
        return purged

    async def summarize(self, target: str, jobs: Sequence[Job], now: datetime) -> Sequence[Message]:
        """Fold late jobs for one room: a header, then each still-relevant message."""
        messages: list[Message] = []
        for job in jobs:
            handler = self.scheduler.handlers.get(job.kind)
            if handler is not None:
                messages.extend(await handler(job, now))
        if not messages or target == "system":
            return messages
        lang = self.policy.service.default_language
        header = self.render.text(
            lang,
            "offline_summary",
            count=len(messages),
            since=when(min(j.due for j in jobs), ZoneInfo("UTC")),
        )
        body = "\n\n".join([header, *(m[1]["body"] for m in messages)])
        return [(target, notice(body))]


# ------------------------------------------------------------------ the feature's port


async def plan_digest(ctx: Context, counselor: Counselor, now: datetime) -> None:
    await Cadence(ctx).plan_digest(counselor, now)


async def on_booked(ctx: Context, booking: Booking, eng: Engagement, counselor: Counselor) -> None:
    await Cadence(ctx).on_booked(booking, eng, counselor)


async def on_cancelled(ctx: Context, booking_id: int) -> None:
    await Cadence(ctx).on_cancelled(booking_id)


async def follow_sla(ctx: Context, payload: dict[str, Any]) -> None:
    """A client wrote in their session room: plan the reminders if nobody answers."""
    eng = await ctx.store.engagement_by_room(str(payload["room"]))
    if eng is not None:
        await Cadence(ctx).on_client_message(eng)
