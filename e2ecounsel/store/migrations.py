"""Schema migrations as an ordered, registered list (in the manner of mautrix's UpgradeTable).

Each program that owns tables (the bridge, the TUI's local store) keeps its own
:class:`MigrationRegistry` and registers its steps in order. A step's version is
its position: the first registered step is version 1. Steps are never edited or
removed once released; a change to the schema is always a new step at the end.
:meth:`e2ecounsel.store.Database.open` applies the steps a database has not seen
yet, each in its own transaction together with its version row.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from e2ecounsel.store.dialects import DIALECTS

if TYPE_CHECKING:
    from e2ecounsel.store.database import Database

MigrationFn = Callable[["Database"], Awaitable[None]]
F = TypeVar("F", bound=MigrationFn)


@dataclass(frozen=True)
class Migration:
    """One schema step.

    ``apply`` receives the :class:`Database` while a transaction is open; it uses
    ``db.execute``/``db.execute_script`` (and may seal values for a data
    migration). It must not commit or roll back on its own.
    """

    version: int
    description: str
    apply: MigrationFn


class MigrationRegistry:
    """The ordered list of schema steps for one database."""

    def __init__(self) -> None:
        self._steps: list[Migration] = []

    def register(self, description: str) -> Callable[[F], F]:
        """Decorator: register ``fn`` as the next step.

        Usage::

            upgrades = MigrationRegistry()

            @upgrades.register("engagements table")
            async def _v1(db: Database) -> None:
                await db.execute_script("CREATE TABLE engagement (...);")
        """

        def decorator(fn: F) -> F:
            self._append(description, fn)
            return fn

        return decorator

    def add_sql(
        self, description: str, sql: str, *, per_dialect: Mapping[str, str] | None = None
    ) -> None:
        """Register a step that runs an SQL script (several statements allowed).

        ``sql`` is written for both dialects (see :mod:`e2ecounsel.store.dialects`).
        What cannot be (a trigger) goes in ``per_dialect``: one script per
        dialect name, written in that dialect and run as it is after ``sql``.
        Give every dialect its script, or the step would differ between them.
        """
        extra = dict(per_dialect or {})
        if extra and set(extra) != set(DIALECTS):
            raise ValueError(f"per_dialect needs a script for each of {', '.join(DIALECTS)}")

        async def apply(db: Database) -> None:
            await db.execute_script(sql)
            if extra:
                await db.execute_script(extra[db.dialect], native=True)

        self._append(description, apply)

    def _append(self, description: str, fn: MigrationFn) -> None:
        if not description.strip():
            raise ValueError("a migration needs a description")
        self._steps.append(Migration(len(self._steps) + 1, description, fn))

    @property
    def latest(self) -> int:
        """The schema version a database has after every step is applied (0 if none)."""
        return len(self._steps)

    @property
    def migrations(self) -> tuple[Migration, ...]:
        return tuple(self._steps)

    def pending(self, current: int) -> tuple[Migration, ...]:
        """The steps after version ``current``, in order."""
        return tuple(step for step in self._steps if step.version > current)

    def __iter__(self) -> Iterator[Migration]:
        return iter(tuple(self._steps))

    def __len__(self) -> int:
        return len(self._steps)
