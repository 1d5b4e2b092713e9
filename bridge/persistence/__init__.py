"""Every SQL statement of the bridge, over the :class:`e2ecounsel.store.Database` port.

The rest of the bridge reads and writes through these classes and never sees
SQL, a connection or a driver: :mod:`.store` (clients, counselors,
engagements, rooms, the outbox, follow-ups), :mod:`.inbox`, :mod:`.jobs`,
:mod:`.pages`, :mod:`.bookings` and :mod:`.audit`; :mod:`.schema` holds the
migrations, :mod:`.pruning` the age limit of operational rows and :mod:`.markers`
the ids of what was done once, kept after their rows are pruned. The SQL is
written once for SQLite and PostgreSQL (rules in :mod:`e2ecounsel.store.dialects`).
"""
