"""Live-session bookings: availability, free slots, reservations.

No double booking is a database rule: a partial unique index on
``(counselor_id, starts_at)`` over booked rows. Two clients racing for one
slot both try to insert; exactly one insert succeeds, the other gets
:class:`SlotTaken` and is offered the next free slots.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from bridge.persistence.store import BridgeStore, iso
from e2ecounsel.domain.booking import WeeklyAvailability, parse_weekly, slots
from e2ecounsel.errors import StorageError
from e2ecounsel.store import IntegrityError, Row

DAY_CODES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class SlotTaken(StorageError):
    """Somebody else booked that slot first."""


@dataclass(frozen=True)
class Booking:
    id: int
    engagement_id: int
    counselor_id: str
    starts_at: datetime
    minutes: int
    status: str


def parse_days_off(text: str) -> frozenset[int]:
    days = set()
    for part in (p.strip().lower()[:3] for p in text.split(",")):
        if part:
            if part not in DAY_CODES:
                raise ValueError(f"unknown day {part!r}; use mon,tue,…,sun")
            days.add(DAY_CODES.index(part))
    return frozenset(days)


class Bookings:
    def __init__(self, store: BridgeStore) -> None:
        self.store = store
        self.db = store.db

    async def set_schedule(self, counselor_id: str, *, availability: str, days_off: str) -> None:
        """Store weekly availability ("mon-fri 10:00-16:00") and days off ("sat,sun")."""
        await self.db.execute(
            "UPDATE counselors SET availability = ?, days_off = ? WHERE user_id = ?",
            (availability, days_off, counselor_id),
        )

    async def schedule_of(self, counselor_id: str) -> tuple[str, str]:
        row = await self.db.fetchone(
            "SELECT availability, days_off FROM counselors WHERE user_id = ?", (counselor_id,)
        )
        return (row["availability"], row["days_off"]) if row else ("", "")

    async def availability(self, counselor_id: str, tz: str) -> WeeklyAvailability | None:
        spec, _ = await self.schedule_of(counselor_id)
        return parse_weekly(spec, tz) if spec.strip() else None

    async def taken(self, counselor_id: str) -> list[datetime]:
        rows = await self.db.fetchall(
            "SELECT starts_at FROM bookings WHERE counselor_id = ? AND status = 'booked'",
            (counselor_id,),
        )
        return [datetime.fromisoformat(r["starts_at"]) for r in rows]

    async def free_slots(
        self,
        counselor_id: str,
        tz: str,
        *,
        now: datetime,
        slot_minutes: int,
        horizon_days: int,
        limit: int = 6,
        lead: timedelta = timedelta(hours=1),
    ) -> list[datetime]:
        avail = await self.availability(counselor_id, tz)
        if avail is None:
            return []
        free = slots(avail, slot_minutes, now + lead, horizon_days, await self.taken(counselor_id))
        return free[:limit]

    async def book(
        self,
        engagement_id: int,
        counselor_id: str,
        starts_at: datetime,
        minutes: int,
        *,
        now: datetime,
    ) -> Booking:
        """Reserve a slot; :class:`SlotTaken` if someone holds it already."""
        try:
            booking_id = await self.db.fetchval(
                "INSERT INTO bookings (engagement_id, counselor_id, starts_at, minutes, created_at)"
                " VALUES (?, ?, ?, ?, ?) RETURNING id",
                (engagement_id, counselor_id, iso(starts_at), minutes, iso(now)),
            )
        except IntegrityError as exc:
            raise SlotTaken("that slot was just taken") from exc
        booking = await self.get(int(booking_id))
        assert booking is not None
        return booking

    async def get(self, booking_id: int) -> Booking | None:
        row = await self.db.fetchone("SELECT * FROM bookings WHERE id = ?", (booking_id,))
        return _booking(row) if row else None

    async def of_engagement(self, engagement_id: int, *, now: datetime) -> list[Booking]:
        rows = await self.db.fetchall(
            "SELECT * FROM bookings WHERE engagement_id = ? AND status = 'booked'"
            " AND starts_at >= ? ORDER BY starts_at",
            (engagement_id, iso(now - timedelta(hours=2))),
        )
        return [_booking(r) for r in rows]

    async def cancel(self, booking_id: int, *, now: datetime) -> bool:
        result = await self.db.execute(
            "UPDATE bookings SET status = 'cancelled', cancelled_at = ?"
            " WHERE id = ? AND status = 'booked'",
            (iso(now), booking_id),
        )
        return bool(result.rowcount)


def _booking(row: Row) -> Booking:
    return Booking(
        row["id"],
        row["engagement_id"],
        row["counselor_id"],
        datetime.fromisoformat(row["starts_at"]),
        row["minutes"],
        row["status"],
    )
