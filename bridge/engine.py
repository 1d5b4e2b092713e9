"""The bot's core: routing each event, matching, session rooms, crisis, and the
lifecycle moves (switch, refer, erase). Features live beside it: the intake in
:mod:`bridge.intake_flow`, commands in :mod:`bridge.client_commands`,
:mod:`bridge.counselor_commands` and :mod:`bridge.supervision`, bookings in
:mod:`bridge.booking_flow`.

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

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from bridge import (
    booking_flow,
    counselor_commands,
    crisis_triage,
    intake_flow,
    rooms,
    supervision,
)
from bridge.cadence import Cadence
from bridge.effects import (
    Effects,
    txn_id,
)
from bridge.kernel.work import CrashPoint, Retry, Work, no_crash
from bridge.persistence.bookings import Bookings
from bridge.persistence.inbox import InboxItem
from bridge.persistence.pages import Pages
from bridge.persistence.store import BridgeStore, ClientRecord, Counselor, Engagement
from bridge.render import Renderer
from e2ecounsel import casechannel
from e2ecounsel.casechannel import CaseEvent
from e2ecounsel.domain import matching
from e2ecounsel.domain.text import clean_text
from e2ecounsel.matrix import MatrixSession
from e2ecounsel.matrix.trust import TrustPolicy
from e2ecounsel.policy import Policy

logger = logging.getLogger(__name__)


class Engine:
    """The bot's behaviour. Matrix, database, policy and clock are handed in."""

    def __init__(
        self,
        session: MatrixSession,
        store: BridgeStore,
        policy: Policy,
        *,
        supervisors_room: str | None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        mark_done: Callable[[str], Awaitable[None]] | None = None,
        flush: Callable[[set[str] | None], Awaitable[None]] | None = None,
        trust: TrustPolicy | None = None,
        crash_point: CrashPoint = no_crash,
    ) -> None:
        self.session = session
        self.store = store
        self.policy = policy
        self.render = Renderer(policy)
        self.supervisors_room = supervisors_room
        self.clock = clock
        self.crisis = policy.crisis.detector()
        self._flush = flush
        self.crash_point = crash_point
        self.work = Work(
            store, txn_id=txn_id, mark_done=mark_done, flush=flush, crash_point=crash_point
        )
        for kind, handler in (
            ("place", self._follow_place),
            ("switch", self._follow_switch),
            ("waitlisted", self._follow_waitlisted),
            ("retire", self._follow_retire),
            ("page", self._follow_page),
            ("drain", self._follow_drain),
            ("sla", self._follow_sla),
            ("lock", self._follow_lock),
            ("reinvite", self._follow_reinvite),
            ("erase.room", self._follow_erase_room),
            ("erase.about", self._follow_erase_about),
        ):
            self.work.handle(kind, handler)
        self._match_lock = asyncio.Lock()
        self._case_locks: dict[str, asyncio.Lock] = {}
        self.max_chars = policy.service.max_message_chars
        self.pages = Pages(store.db, clock=clock)
        self.trust = trust
        # (sender, device key) -> when they were last told their device is not trusted
        self._told_untrusted: dict[tuple[str, str], datetime] = {}
        # The supervisors last invited to each supervisors' room (skip re-reading members).
        self.synced_supervisors: dict[str, frozenset[str]] = {}
        self._private: dict[str, bool] = {}  # DM room -> is it private (see is_private_dm)
        # Set by the bridge when scheduling is on (always, outside unit tests).
        self.bookings: Bookings | None = None
        self.cadence: Cadence | None = None

    @property
    def bot(self) -> str:
        return self.session.user_id

    # ------------------------------------------------------------------ plumbing

    async def commit(self, fx: Effects, event_id: str | None) -> None:
        """One step's writes, messages and follow-ups in one transaction; then send them."""
        await self.work.commit(fx, event_id)

    async def audit(
        self, actor: str, action: str, engagement_id: int | None = None, detail: str = ""
    ) -> None:
        await self.store.audit(actor, action, engagement_id=engagement_id, detail=detail)

    def lang_of(self, client: ClientRecord | None) -> str:
        lang = client.language if client else None
        return self.policy.language(lang)

    # ------------------------------------------------------------------ entry

    async def handle(self, item: InboxItem) -> None:
        """Handle one inbox item; never raises (a failure is logged by id).

        Before anything else: only an event that was decrypted and comes from a
        device its owner cross-signed can change anything. Anyone holding a
        client's access token can post into their encrypted DM in clear, and
        an unverified device may not be theirs at all; both get the plain
        "your device is not verified" answer and nothing else. An edit of an
        earlier message is never taken as a new answer or command.
        """
        if await self.store.is_handled(item.event_id):
            return
        kind = await self.store.room_kind(item.room_id)
        room_kind = kind[0] if kind else None
        if item.room_id == self.supervisors_room:
            room_kind = "supervisors"
        if item.kind == "joined":
            await intake_flow.on_joined(self, item)
            return
        if item.sender == self.bot:
            await self.commit(Effects(item.event_id), item.event_id)
            return
        trusted = item.kind not in ("text", "edit") or await self.sender_trusted(item)
        if room_kind == "session":
            await self.on_session_message(item, trusted=trusted)
        elif room_kind is None and await self.pages.is_page_room(item.room_id):
            await self.commit(Effects(item.event_id), item.event_id)  # people talk; the bot listens
        elif not trusted and (item.encrypted or room_kind in ("case", "supervisors")):
            fx = Effects(item.event_id)
            self.refuse_untrusted(fx, item, await self._sender_lang(item, room_kind))
            await self.commit(fx, item.event_id)
        elif item.kind == "edit":
            fx = Effects(item.event_id)
            if room_kind in (None, "dm"):
                lang = await self._sender_lang(item, room_kind)
                fx.say(item.room_id, self.render.text(lang, "edit.ignored"))
            await self.commit(fx, item.event_id)
        elif room_kind == "supervisors":
            await supervision.on_supervisor_message(self, item)
        elif room_kind == "case":
            await counselor_commands.on_case_message(self, item)
        else:
            await intake_flow.on_dm_message(self, item)

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
        try:
            await self.trust.apply_users(self.session.client, [item.sender])
        except Exception:
            logger.warning("device look-up for a sender in %s failed", item.room_id)
            return False
        return self.trust.is_sender_key_trusted(item.sender, item.sender_key)

    #: How often one device is told that it is not trusted.
    UNTRUSTED_NOTE_EVERY_S = 3600

    def refuse_untrusted(self, fx: Effects, item: InboxItem, lang: str) -> None:
        """The "your device is not verified" answer, at most once an hour per device."""
        key = (item.sender, item.sender_key or "plaintext")
        now = self.clock()
        last = self._told_untrusted.get(key)
        if last is not None and (now - last).total_seconds() < self.UNTRUSTED_NOTE_EVERY_S:
            return
        self._told_untrusted[key] = now
        logger.info("an event from an untrusted device in %s was not acted on", item.room_id)
        fx.say(item.room_id, self.render.text(lang, "trust.untrusted_sender"))

    async def _sender_lang(self, item: InboxItem, room_kind: str | None) -> str:
        if room_kind == "case":
            counselor = await self.store.counselor_by_case_room(item.room_id)
            if counselor is not None:
                return self.counselor_lang(counselor)
        return self.lang_of(await self.store.get_client(item.sender))

    async def is_private_dm(self, room_id: str) -> bool:
        """The client's DM holds exactly the two of us, encrypted, invite-only, not world-readable.

        Personal answers (intake, status, bookings) go nowhere else: a DM that
        someone made public, opened to a third person or world-readable is
        not private any more. The room's state is read from the homeserver
        once per room (the sync after a restart carries too little of it) and
        read again after the bridge saw the membership or those rules change
        (:meth:`room_changed`).
        """
        known = self._private.get(room_id)
        if known is not None:
            return known
        status, state = await self.session.raw(
            "GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/state"
        )
        if status != 200 or not isinstance(state, list):
            logger.warning("reading the state of %s failed: %s", room_id, status)
            return False
        members = 0
        encrypted = False
        join_rule = history = ""
        for event in state:
            if not isinstance(event, dict):
                continue
            content = event.get("content") or {}
            kind = event.get("type")
            if kind == "m.room.member" and content.get("membership") in ("join", "invite"):
                members += 1
            elif kind == "m.room.encryption":
                encrypted = True
            elif kind == "m.room.join_rules":
                join_rule = str(content.get("join_rule"))
            elif kind == "m.room.history_visibility":
                history = str(content.get("history_visibility"))
        private = encrypted and members == 2 and join_rule == "invite"
        private = private and history != "world_readable"
        self._private[room_id] = private
        return private

    def room_changed(self, room_id: str) -> None:
        """Membership or room rules changed: look at the room's privacy again."""
        self._private.pop(room_id, None)

    def _audit_fn(
        self, actor: str, action: str, engagement_id: int | None = None, detail: str = ""
    ) -> Callable[[], Awaitable[Any]]:
        return lambda: self.audit(actor, action, engagement_id, detail)

    audit_fn = _audit_fn

    # ------------------------------------------------------------------ matching

    def match_request(self, client: ClientRecord, crisis: bool = False) -> matching.MatchRequest:
        """What matching needs; a crisis (now or during the intake) prefers on-call counselors."""
        profile = client.profile
        preferred = profile.get("preferred")
        return matching.MatchRequest(
            language=self.lang_of(client),
            topics=frozenset([profile["topic"]]) if profile.get("topic") else frozenset(),
            preferred=None if preferred in (None, "auto") else str(preferred),
            crisis=crisis or bool(profile.get("crisis")),
            prefer_on_call=self.policy.service.on_call.prefer_in_crisis,
        )

    async def counselor_loads(self, exclude: Collection[str] = ()) -> list[matching.CounselorLoad]:
        counselors = await self.store.list_counselors(active_only=True)
        loads = await self.store.caseloads(
            dormant_after_days=self.policy.service.dormant_after_days
        )
        return [
            matching.CounselorLoad(
                id=c.user_id,
                languages=frozenset(c.languages),
                specialties=frozenset(c.specialties),
                capacity=c.capacity,
                caseload=loads.get(c.user_id, 0),
                on_call=c.on_call,
                available=c.user_id not in exclude,
            )
            for c in counselors
        ]

    async def place_client(
        self,
        client: ClientRecord,
        *,
        cause: str,
        note_key: str = "intake.matched",
        incoming_key: str | None = None,
    ) -> None:
        """After intake: open an engagement and match it, or put it on the waitlist.

        Resumable: an engagement already open is reused, and one whose room
        was being created (see :meth:`ensure_room`) goes to the counselor
        chosen then, so a crash half-way never yields a second room.
        """
        async with self._match_lock:
            existing = await self.store.current_engagement(client.user_id)
            if existing is None:
                crisis = bool(client.profile.get("crisis"))
                async with self.store.transaction():
                    existing = await self.store.open_engagement(client.user_id, crisis=crisis)
                    if crisis:
                        await self.store.set_risk(existing.id, "high")
                    await self.audit(client.user_id, "engagement.open", existing.id)
                self.crash_point("engagement.opened")
            if existing.status != "waiting":
                return
            chosen = await self._requested_counselor(existing)
            if chosen is None:
                chosen = matching.match(
                    self.match_request(client), await self.counselor_loads(), self.match_weights()
                )
            if chosen is None:
                await self._tell_waitlisted(client, cause)
                return
            await self.assign(
                existing,
                client,
                chosen,
                cause=cause,
                share_brief=existing.share_brief,
                note_key=note_key,
                incoming_key=incoming_key,
            )

    async def _requested_counselor(self, eng: Engagement) -> str | None:
        """The counselor an engagement's room is (being) created for, if still on the roster."""
        request = await self.store.room_request(f"engagement:{eng.id}")
        if request is None:
            return None
        counselor = await self.store.get_counselor(request.counselor_id)
        if counselor is not None and (counselor.active or request.attempted_at is not None):
            return counselor.user_id  # a room may exist already: use it
        await self.store.drop_room_request(request.purpose)
        return None

    # ------------------------------------------------------------------ follow-ups

    async def _follow_place(self, payload: dict[str, Any]) -> None:
        client = await self.store.get_client(str(payload["client"]))
        if client is None:
            return  # erased meanwhile
        await self.place_client(
            client,
            cause=str(payload["cause"]),
            note_key=str(payload.get("note_key") or "intake.matched"),
            incoming_key=payload.get("incoming_key"),
        )

    async def _follow_switch(self, payload: dict[str, Any]) -> None:
        client = await self.store.get_client(str(payload["client"]))
        if client is None:
            return
        await self.switch(
            client,
            payload.get("target"),
            bool(payload["share"]),
            cause=str(payload["cause"]),
            note_key=str(payload["note_key"]),
            old_notice_key=payload.get("old_notice_key"),
            incoming_key=payload.get("incoming_key"),
            waitlist_key=str(payload.get("waitlist_key") or "intake.waitlisted"),
        )

    async def _follow_drain(self, payload: dict[str, Any]) -> None:
        await self.drain_waitlist(str(payload["cause"]))

    async def _follow_lock(self, payload: dict[str, Any]) -> None:
        """A closed engagement's room becomes read-only (its history stays readable)."""
        await rooms.make_read_only(self.session, str(payload["room"]))

    async def _follow_reinvite(self, payload: dict[str, Any]) -> None:
        """Invite a client back into their session room if they left it."""
        room_id, client_id = str(payload["room"]), str(payload["client"])
        if (await rooms.members(self.session, room_id)).get(client_id) == "leave":
            await rooms.invite(self.session, room_id, client_id)

    async def _follow_sla(self, payload: dict[str, Any]) -> None:
        eng = await self.store.engagement_by_room(str(payload["room"]))
        if eng is not None and self.cadence is not None:
            await self.cadence.on_client_message(eng)

    def match_weights(self) -> matching.MatchWeights:
        w = self.policy.service.matching
        return matching.MatchWeights(specialty=w.specialty, load=w.load)

    async def _tell_waitlisted(
        self, client: ClientRecord, cause: str, *, key: str = "intake.waitlisted"
    ) -> None:
        waiting = await self.store.waiting()
        ids = [e.client_id for e in waiting]
        position = ids.index(client.user_id) + 1 if client.user_id in ids else len(ids)
        fx = Effects(cause)
        if client.dm_room_id:
            fx.say(
                client.dm_room_id, self.render.text(self.lang_of(client), key, position=position)
            )
        await self.commit(fx, None)

    async def case_room(self, counselor: Counselor) -> str:
        """The bot's encrypted DM with a counselor (briefs, pages, digests).

        Created once: a burst of pages for a counselor without one waits on
        the counselor's lock and then finds the room the first one made.
        """
        if counselor.case_room_id:
            return counselor.case_room_id
        lock = self._case_locks.setdefault(counselor.user_id, asyncio.Lock())
        async with lock:
            fresh = await self.store.get_counselor(counselor.user_id)
            if fresh is not None and fresh.case_room_id:
                return fresh.case_room_id
            return await self._create_case_room(counselor)

    async def _create_case_room(self, counselor: Counselor) -> str:
        lang = self.counselor_lang(counselor)
        purpose = f"case:{counselor.user_id}"
        room_id = await self.ensure_room(
            purpose,
            counselor.user_id,
            rooms.private_room_body(
                name=self.render.text(lang, "case.room_name"), invite=[counselor.user_id]
            ),
        )
        fx = Effects(f"case-welcome:{room_id}")
        fx.write(lambda: self.store.set_case_room(counselor.user_id, room_id))
        fx.write(lambda: self.store.set_room(room_id, "case", counselor.user_id))
        fx.write(lambda: self.store.drop_room_request(purpose))
        fx.say(room_id, self.render.text(lang, "case.welcome"), reader=counselor.user_id)
        await self.commit(fx, None)
        self.crash_point("case_room.recorded")
        return room_id

    async def ensure_room(self, purpose: str, counselor_id: str, body: dict[str, Any]) -> str:
        """The room for ``purpose``: found again after a crash, else created (once).

        The request is committed before the homeserver is asked; a request
        that was tried before may have created a room whose answer was lost,
        so the bot's rooms are searched for the purpose marker first.
        """
        async with self.store.transaction():
            request = await self.store.request_room(purpose, counselor_id)
            if request.room_id is None:
                await self.store.room_attempted(purpose)
        if request.room_id is not None:
            return request.room_id
        if request.attempted_at is not None:
            found = await rooms.find_room(self.session, purpose, await self.store.known_rooms())
            if found is not None:
                logger.info("found the room of an interrupted creation again")
                await self.store.room_created(purpose, found)
                return found
        self.crash_point("room.requested")
        room_id = await rooms.create_room(self.session, body, purpose)
        self.crash_point("room.created")
        await self.store.room_created(purpose, room_id)
        return room_id

    def counselor_lang(self, counselor: Counselor) -> str:
        return self.policy.language(counselor.languages[0] if counselor.languages else None)

    def brief_data(self, client: ClientRecord, counselor: Counselor, risk: str) -> dict[str, Any]:
        """The brief as data, for the counselor app (keys: see :mod:`e2ecounsel.casechannel`)."""
        lang = self.counselor_lang(counselor)
        p = client.profile
        screening: list[dict[str, Any]] = []
        for inst_id in self.policy.service.screening:
            inst = self.policy.instruments[inst_id]
            entry: dict[str, Any] = {"instrument": inst.id, "title": inst.title.get(lang, inst.id)}
            scored = (p.get("scores") or {}).get(inst_id)
            if scored is not None:
                band = inst.band(str(scored.get("severity") or ""))
                entry.update(
                    score=scored["score"],
                    severity=band.severity if band else None,
                    severity_label=band.label.get(lang, band.severity) if band else None,
                )
            screening.append(entry)
        critical: list[dict[str, Any]] = []
        answers = p.get("answers") or []
        for idx, inst_id in enumerate(self.policy.service.screening):
            inst = self.policy.instruments[inst_id]
            got = answers[idx] if idx < len(answers) else None
            if not got or len(got) != len(inst.items):
                continue  # skipped or unfinished: no critical item to report
            for item_index in inst.critical_hits(got):
                critical.append(
                    {
                        "instrument": inst.id,
                        "title": inst.title.get(lang, inst.id),
                        "item": item_index + 1,
                        "answer": got[item_index],
                    }
                )
        flags = ["check:no"] if p.get(crisis_triage.FLAG) == "check:no" else []
        topic = self.policy.service.topic(str(p.get("topic") or ""))
        country = self.policy.crisis.country(p.get("country"))
        return {
            "pseudonym": p.get("pseudonym"),
            "language": client.language,
            "country": country.code,
            "country_label": country.label.get(lang, country.code),
            "topic": topic.id if topic else None,
            "topic_label": topic.label.get(lang, topic.id) if topic else None,
            "risk": risk,
            "screening": screening,
            "critical": critical,
            "consent_date": (client.consented_at or "")[:10] or None,
            "flags": flags,
        }

    def brief_text(
        self, counselor: Counselor, data: dict[str, Any], room_id: str, case: int
    ) -> str:
        """The human side of the brief, rendered from :meth:`brief_data`."""
        lang = self.counselor_lang(counselor)
        lines = []
        for entry in data["screening"]:
            if "score" not in entry:
                lines.append(
                    self.render.text(
                        lang, "brief.screening_skipped", instrument_title=entry["title"]
                    )
                )
                continue
            lines.append(
                self.render.text(
                    lang,
                    "brief.screening_line",
                    instrument_title=entry["title"],
                    score=entry["score"],
                    severity=entry["severity_label"] or "",
                )
            )
        for hit in data["critical"]:
            lines.append(
                self.render.text(
                    lang,
                    "brief.critical",
                    instrument_title=hit["title"],
                    item=hit["item"],
                    answer=hit["answer"],
                )
            )
        if "check:no" in data.get("flags", ()):
            lines.append(self.render.text(lang, "brief.check_no"))
        return self.render.text(
            lang,
            "brief.new",
            pseudonym=data["pseudonym"] or "?",
            language=data["language"] or "?",
            country=data["country_label"],
            topic=data["topic_label"] or "?",
            screening="\n".join(lines),
            risk=self.render.text(lang, f"risk.{data['risk']}"),
            room_link=rooms.room_link(room_id),
            consent_date=data["consent_date"] or "?",
            case=case,
        )

    async def assign(
        self,
        eng: Engagement,
        client: ClientRecord,
        counselor_id: str,
        *,
        cause: str,
        share_brief: bool = True,
        note_key: str = "intake.matched",
        incoming_key: str | None = None,
    ) -> str:
        """Create the session room for an engagement and tell everyone.

        The counselor's case channel gets ``incoming_key`` (a hand-over note)
        if given, then the brief, or only the room link when the client chose
        not to share their intake summary. The room is made (or found again)
        first; the assignment, every message and the counselor's next digest
        then commit together, with transaction ids derived from the
        engagement, so a repeated assignment sends nothing twice. Callers
        hold the match lock.
        """
        counselor = await self.store.get_counselor(counselor_id)
        assert counselor is not None
        lang = self.lang_of(client)
        purpose = f"engagement:{eng.id}"
        room_id = await self.ensure_room(
            purpose,
            counselor.user_id,
            rooms.session_room_body(
                name=self.render.text(lang, "session.room_name"),
                counselor=counselor.user_id,
                client=client.user_id,
            ),
        )
        case_room = await self.case_room(counselor)
        fresh = await self.store.get_engagement(eng.id)
        risk = fresh.risk if fresh else "low"
        fx = Effects(f"assign:{eng.id}:{counselor_id}")
        fx.write(lambda: self.store.assign(eng.id, counselor.user_id, room_id))
        fx.write(lambda: self.store.set_room(room_id, "session", client.user_id))
        fx.write(lambda: self.store.drop_room_request(purpose))
        fx.write(self._audit_fn(counselor.user_id, "engagement.assign", eng.id))
        country = client.profile.get("country")
        fx.say(
            room_id,
            self.render.text(
                lang,
                "session.intro",
                counselor_name=counselor.name,
                credentials=counselor.credentials,
                crisis_line=self.policy.crisis_line(lang, country),
            ),
            reader=client.user_id,
        )
        clang = self.counselor_lang(counselor)
        link = rooms.room_link(room_id)
        if incoming_key is not None:
            fx.say(
                case_room,
                self.render.text(clang, incoming_key, room_link=link),
                reader=counselor.user_id,
            )
        data: dict[str, Any] = {"case": eng.id, "shared": share_brief, "risk": risk}
        if share_brief:
            data.update(self.brief_data(client, counselor, risk))
            brief = self.brief_text(counselor, data, room_id, eng.id)
        else:
            brief = self.render.text(clang, "brief.not_shared", room_link=link, case=eng.id)
        fx.say(
            case_room,
            brief,
            reader=counselor.user_id,
            about=client.user_id,
            case=CaseEvent("brief", eng.id, room_id, data),
        )
        if client.dm_room_id:
            fx.say(
                client.dm_room_id, self.render.text(lang, note_key, counselor_name=counselor.name)
            )
        if self.cadence is not None:
            cadence, fresh_counselor = self.cadence, await self.store.get_counselor(counselor_id)
            if fresh_counselor is not None:
                fx.write(lambda: cadence.plan_digest(fresh_counselor, self.clock()))
        await self.commit(fx, None)
        logger.info("engagement %d assigned (%s)", eng.id, cause)
        self.crash_point("assigned")
        return room_id

    async def drain_waitlist(self, cause: str) -> None:
        """Assign waiting clients while capacity allows (crisis first, then FIFO)."""
        async with self._match_lock:
            waiting = await self.store.waiting()
            if not waiting:
                return
            clients = {}
            wl = []
            for e in waiting:
                c = await self.store.get_client(e.client_id)
                if c is None:
                    continue
                request = await self.store.room_request(f"engagement:{e.id}")
                if request is not None and request.attempted_at is None:
                    continue  # a switch's own follow-up places it, with its texts
                requested = await self._requested_counselor(e) if request else None
                if requested is not None:
                    # Its room was being created when the bridge stopped: finish that.
                    await self.assign(e, c, requested, cause=f"{cause}:{e.id}")
                    continue
                clients[e.client_id] = (c, e)
                wl.append(
                    matching.WaitingClient(
                        e.client_id,
                        datetime.fromisoformat(e.opened_at),
                        self.match_request(c, crisis=e.crisis),
                    )
                )
            pairs = matching.assign_from_waitlist(
                wl, await self.counselor_loads(), self.match_weights()
            )
            for client_id, counselor_id in pairs:
                c, e = clients[client_id]
                await self.assign(
                    e, c, counselor_id, cause=f"{cause}:{e.id}", note_key="waitlist.assigned"
                )

    # ------------------------------------------------------------------ crisis

    async def crisis_protocol(
        self,
        fx: Effects,
        client: ClientRecord,
        reason: str,
        *,
        reply_room: str,
        remember: bool = False,
    ) -> Engagement | None:
        """Crisis text to the client at once; risk high; a page to on-call and supervisors.

        The crisis reply is put first in ``fx`` so it is the next thing the
        client sees, whatever else the handler queues, and it says only what
        really happened: that the team was alerted if someone was paged, and
        plainly that nobody could be otherwise. The page is a row (its number
        is what ``!take`` answers) and a message that carries what the paged
        person needs to act and nothing the client wrote. With ``remember``, a
        client who has no open engagement yet is flagged in their profile so
        that matching prefers an on-call counselor (the intake saves its own
        record and does not need this). Returns the client's open engagement.
        """
        lang = self.lang_of(client)
        country = client.profile.get("country")
        eng = await self.store.current_engagement(client.user_id)
        session_room = eng.room_id if eng and eng.room_id else None
        if eng is not None:
            fx.write(lambda: self.store.set_risk(eng.id, "high"))
            fx.write(lambda: self.store.set_crisis(eng.id, True))
        elif remember:
            flagged = replace(client, profile={**client.profile, "crisis": True})
            fx.write(lambda: self.store.save_client(flagged))
        fx.write(
            self._audit_fn(
                client.user_id,
                "crisis",
                eng.id if eng else None,
                detail=reason.replace(" ", "_")[:64],
            )
        )
        logger.warning("crisis protocol started (%s)", reason)
        oncall = self.policy.service.on_call
        targets: list[Counselor] = []
        if oncall.page_on_crisis:
            targets = [c for c in await self.store.list_counselors(active_only=True) if c.on_call]
            if eng is not None and eng.counselor_id:
                assigned = await self.store.get_counselor(eng.counselor_id)
                if assigned is not None and assigned.user_id not in {t.user_id for t in targets}:
                    targets.append(assigned)
        supervisors = self.supervisors_room if oncall.page_supervisors_on_crisis else None
        paged = bool(targets or supervisors)
        told = self.render.text(lang, "crisis.paged" if paged else "crisis.not_paged")
        crisis_reply = self.policy.crisis_reply(lang, country).rstrip() + "\n\n" + told
        fx.say(reply_room, crisis_reply)
        fx.messages.insert(0, fx.messages.pop())
        if not paged:
            return eng
        page_id = await self.pages.open(
            cause=f"{fx.cause}:{reason}",
            client_id=client.user_id,
            engagement_id=eng.id if eng else None,
            reason=reason,
        )
        key = "page.urgent" if reason == "command:urgent" else "page.crisis"
        case = CaseEvent(
            "page",
            eng.id if eng else None,
            session_room,
            {"page": page_id, "reason": reason, "client_room": session_room or reply_room},
        )
        for c in targets:
            body = self.render.text(self.counselor_lang(c), key, page=page_id)
            if c.case_room_id is None:
                fx.follow(
                    "page", counselor=c.user_id, body=body, case=case.to_content(), cause=fx.cause
                )
            else:
                fx.say(c.case_room_id, body, reader=c.user_id, case=case, mention=c.user_id)
        if supervisors:
            lang0 = self.policy.service.default_language
            fx.say(supervisors, self.render.text(lang0, key, page=page_id), case=case)
        return eng

    async def _follow_page(self, payload: dict[str, Any]) -> None:
        """A page for a counselor who had no case channel yet (it is created first)."""
        c = await self.store.get_counselor(str(payload["counselor"]))
        if c is None:
            return
        room = await self.case_room(c)
        fx = Effects(f"{payload['cause']}:page:{c.user_id}")
        case = casechannel.parse({casechannel.FIELD: payload["case"]})
        fx.say(room, str(payload["body"]), reader=c.user_id, case=case, mention=c.user_id)
        await self.commit(fx, None)

    async def switch(
        self,
        client: ClientRecord,
        target_id: str | None,
        share: bool,
        *,
        cause: str,
        note_key: str,
        old_notice_key: str | None = None,
        incoming_key: str | None = None,
        waitlist_key: str = "intake.waitlisted",
    ) -> None:
        """Move the client's active engagement to another counselor, in a new room.

        Used by the client's ``switch``, a counselor's ``!refer``, a
        supervisor's ``!reassign`` and the re-match after a counselor leaves
        the roster. ``target_id`` None (or a target who has no room any more)
        means "the best match other than the current counselor"; when nobody
        is free the client waits on the list and is told so with
        ``waitlist_key`` (a follow-up of the same step). The old
        engagement is closed without an outcome and the new one opened (with
        the risk level, the crisis flag and the chosen counselor) in one
        transaction that also records the follow-ups: the old counselor
        leaves the old room (the client keeps it and its history) and the new
        room is made. The decision runs under the match lock, so the periodic
        waitlist drain cannot grab the new engagement half-way; the follow-ups
        run once the lock is released.
        """
        async with self._match_lock:
            eng = await self.store.current_engagement(client.user_id)
            if eng is None or eng.status != "active" or eng.counselor_id is None:
                return
            old_counselor, old_room = eng.counselor_id, eng.room_id
            if target_id == old_counselor:
                return
            loads = await self.counselor_loads(exclude={old_counselor})
            request = self.match_request(client, eng.crisis)
            if target_id is None or not any(c.id == target_id and c.has_room for c in loads):
                target_id = matching.match(
                    replace(request, preferred=None), loads, self.match_weights()
                )
            chosen = target_id

            async def move() -> None:
                await self.store.close_engagement(eng.id, None)
                await self.audit(client.user_id, "engagement.switch", eng.id)
                new = await self.store.open_engagement(
                    client.user_id, crisis=eng.crisis, share_brief=share
                )
                if eng.risk != "low":
                    await self.store.set_risk(new.id, eng.risk)
                if chosen is not None:
                    await self.store.request_room(f"engagement:{new.id}", chosen)

            fx = Effects(f"{cause}:switch")
            fx.write(move)
            if old_room:
                fx.follow(
                    "retire",
                    room=old_room,
                    counselor=old_counselor,
                    client=client.user_id,
                    engagement=eng.id,
                    cause=f"{cause}:old-room",
                    moved=chosen is not None,
                    notice_key=old_notice_key,
                )
            if chosen is not None:
                fx.follow(
                    "place",
                    client=client.user_id,
                    cause=f"{cause}:switch",
                    note_key=note_key,
                    incoming_key=incoming_key,
                )
            else:
                fx.follow(
                    "waitlisted", client=client.user_id, cause=f"{cause}:waitlist", key=waitlist_key
                )
            await self.work.commit(fx, None, follow=False)
        await self.work.run([f.key for f in fx.follow_ups])

    async def _follow_waitlisted(self, payload: dict[str, Any]) -> None:
        """Tell a client they are on the waiting list (unless placed or gone meanwhile)."""
        client = await self.store.get_client(str(payload["client"]))
        if client is None:
            return
        eng = await self.store.current_engagement(client.user_id)
        if eng is None or eng.status != "waiting":
            return
        await self._tell_waitlisted(client, str(payload["cause"]), key=str(payload["key"]))

    async def _follow_retire(self, payload: dict[str, Any]) -> None:
        """The old counselor leaves the client's old room; the client keeps it."""
        room_id, counselor_id = str(payload["room"]), str(payload["counselor"])
        client = await self.store.get_client(str(payload["client"]))
        counselor = await self.store.get_counselor(counselor_id)
        fx = Effects(str(payload["cause"]))
        if payload.get("moved") and client is not None:
            fx.say(room_id, self.render.text(self.lang_of(client), "switch.old_room"))
        # Without a notice of its own the counselor is still told (and their
        # app drops the client): a referral, a re-match after a roster change.
        notice_key = payload.get("notice_key") or "case.handed_over"
        engagement = int(payload["engagement"])
        if counselor is not None and counselor.case_room_id:
            fx.say(
                counselor.case_room_id,
                self.render.text(
                    self.counselor_lang(counselor),
                    str(notice_key),
                    room_link=rooms.room_link(room_id),
                    case=engagement,
                ),
                reader=counselor.user_id,
                case=CaseEvent("released", engagement, room_id),
            )
        await self.commit(fx, None)
        await rooms.kick(self.session, room_id, counselor_id)
        self.crash_point("retire.kicked")

    async def erase(self, fx: Effects, client: ClientRecord, item: InboxItem) -> None:
        """Delete what we store about the client; redact, remove the counselor, leave.

        The goodbye, the deletion, a ``released`` note to each counselor who
        still has the client, and one follow-up per room (session rooms, the
        rooms a page's taker met the client in, the DM) go into ONE
        transaction. The follow-ups redact the bot's messages (they need the
        event ids the outbox still holds, and a crash there leaves nothing
        readable in the database), remove the counselor from the session
        room, and leave; they are retried until done, also after a crash. The
        freed capacity goes to the waiting list.
        """
        lang = self.lang_of(client)
        fx.say(item.room_id, self.render.text(lang, "erase.done"))
        engagements = await self.store.engagements_of_client(client.user_id)
        for e in engagements:
            if e.status != "active" or e.counselor_id is None:
                continue
            counselor = await self.store.get_counselor(e.counselor_id)
            if counselor is None or counselor.case_room_id is None:
                continue
            fx.say(
                counselor.case_room_id,
                self.render.text(self.counselor_lang(counselor), "case.released", case=e.id),
                reader=counselor.user_id,
                case=CaseEvent("released", e.id, e.room_id),
            )
        # Rooms where a page's taker met the client count as session rooms:
        # everyone but the client is removed. Read before the deletion below.
        page_rooms = await self.store.page_rooms(client.user_id)
        sessions = {e.room_id for e in engagements if e.room_id} | set(page_rooms)
        room_ids = list(
            dict.fromkeys(
                [
                    *(e.room_id for e in engagements if e.room_id),
                    *page_rooms,
                    client.dm_room_id,
                    item.room_id,
                ]
            )
        )
        fx.write(self._audit_fn(client.user_id, "client.erase"))
        fx.write(lambda: self.store.delete_client(client.user_id))
        fx.follow("erase.about", subject=client.user_id)
        for room_id in room_ids:
            if room_id:
                fx.follow(
                    "erase.room",
                    room=room_id,
                    keep_last=room_id == item.room_id,
                    session=room_id in sessions,
                    client=client.user_id,
                )
        fx.follow("drain", cause=f"erase:{item.event_id}")

    async def _follow_erase_about(self, payload: dict[str, Any]) -> None:
        """Redact what the bot wrote about an erased client in other rooms (briefs)."""
        subject = str(payload["subject"])
        for room_id, event_id in await self.store.events_about(subject):
            await rooms.redact(self.session, room_id, event_id, txn_id(f"redact:{event_id}", 0))
            self.crash_point("erase.redacted")
        await self.store.forget_about(subject)

    async def _follow_erase_room(self, payload: dict[str, Any]) -> None:
        """Redact the bot's messages in one of an erased client's rooms, remove the
        counselor, forget the room, leave it.

        In the room where the client asked (``keep_last``) the newest
        message, the goodbye, stays readable: it is the client's confirmation
        that the erasure happened, so it must have gone out first.
        """
        room_id = str(payload["room"])
        if payload.get("keep_last"):
            if self._flush is not None:
                await self._flush({room_id})
            if room_id in await self.store.unsent_rooms():
                raise Retry("the goodbye is not sent yet")
        sent = await self.store.sent_events(room_id)
        if payload.get("keep_last"):
            sent = sent[:-1]
        for event_id in sent:
            await rooms.redact(self.session, room_id, event_id, txn_id(f"redact:{event_id}", 0))
            self.crash_point("erase.redacted")
        if payload.get("session"):
            for user_id, membership in (await rooms.members(self.session, room_id)).items():
                if user_id in (self.bot, payload.get("client")):
                    continue
                if membership in ("join", "invite"):
                    await rooms.kick(self.session, room_id, user_id)
                    self.crash_point("erase.kicked")
        await self.store.forget_room(room_id)
        await rooms.leave(self.session, room_id)
        self.crash_point("erase.left")

    # ------------------------------------------------------------------ session rooms

    async def on_session_message(self, item: InboxItem, *, trusted: bool = True) -> None:
        """A message in a session room: note who is waiting, watch for a crisis, run commands.

        Only a client's words can start the crisis protocol (a counselor may
        well write "self-harm" while working). A line starting with ``!`` from
        the room's counselor is a command for this room's engagement: it is
        carried out, redacted here and answered in the counselor's case
        channel (see :func:`bridge.counselor_commands.session_command`). The
        client trying a counselor command gets a polite refusal; other ``!``
        lines are just chat. Waiting time counts from metadata, so it is
        noted even for a message the bot may not act on; anything else needs
        a trusted sender.
        """
        fx = Effects(item.event_id)
        eng = await self.store.engagement_by_room(item.room_id)
        if eng is None:
            await self.commit(fx, item.event_id)
            return
        role = (
            "client"
            if item.sender == eng.client_id
            else ("counselor" if item.sender == eng.counselor_id else None)
        )
        if role is not None and eng.status == "active" and item.kind != "edit":
            fx.write(lambda: self.store.record_message(item.room_id, role=role, ts_ms=item.ts))
            if role == "client" and self.cadence is not None:
                fx.follow("sla", room=item.room_id)
        if item.kind != "text":
            await self.commit(fx, item.event_id)
            return
        client = await self.store.get_client(eng.client_id)
        if not trusted:
            counselor = await self.store.get_counselor(item.sender) if role == "counselor" else None
            if counselor is not None:
                # Said to the counselor where the client cannot read it.
                note = replace(item, room_id=await self.case_room(counselor))
                self.refuse_untrusted(fx, note, self.counselor_lang(counselor))
            else:
                self.refuse_untrusted(fx, item, self.lang_of(client))
            await self.commit(fx, item.event_id)
            return
        text = clean_text(item.body, self.max_chars)
        # A crisis matter (or the answer to a check question) is neither a command nor an
        # answer to a booking question.
        screened = None
        if role == "client" and client is not None:
            screened = await crisis_triage.screen(
                self, fx, client, text, room=item.room_id, where="session"
            )
        if screened is None and text.startswith("!"):
            await counselor_commands.session_command(self, fx, eng, client, item, text)
        elif screened is None and role == "client" and client is not None:
            await booking_flow.answer_in_session(self, fx, client, text, item.room_id)
        await self.commit(fx, item.event_id)

    async def has_room(self, counselor_id: str) -> bool:
        return any(c.id == counselor_id and c.has_room for c in await self.counselor_loads())
