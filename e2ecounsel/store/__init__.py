"""The database layer: SQLite or PostgreSQL, registered migrations, sealed columns.

The store knows no table of its own except ``schema_version``; each program
(bridge, TUI) brings its schema as a :class:`MigrationRegistry`.
"""

from e2ecounsel.store.database import PRAGMAS, Database, ExecResult, IntegrityError, split_sql
from e2ecounsel.store.dialects import DIALECTS, POSTGRESQL, SQLITE, Params, Row
from e2ecounsel.store.migrations import Migration, MigrationFn, MigrationRegistry

__all__ = [
    "DIALECTS",
    "POSTGRESQL",
    "PRAGMAS",
    "SQLITE",
    "Database",
    "ExecResult",
    "IntegrityError",
    "Migration",
    "MigrationFn",
    "MigrationRegistry",
    "Params",
    "Row",
    "split_sql",
]
