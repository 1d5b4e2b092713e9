"""The database layer: aiosqlite, registered migrations, sealed columns.

The store knows no table of its own except ``schema_version``; each program
(bridge, TUI) brings its schema as a :class:`MigrationRegistry`.
"""

from e2ecounsel.store.database import PRAGMAS, Database, ExecResult, Params, split_sql
from e2ecounsel.store.migrations import Migration, MigrationFn, MigrationRegistry

__all__ = [
    "PRAGMAS",
    "Database",
    "ExecResult",
    "Migration",
    "MigrationFn",
    "MigrationRegistry",
    "Params",
    "split_sql",
]
