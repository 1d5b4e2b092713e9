"""Everything that talks to the homeserver, through matrix-nio."""

from e2ecounsel.matrix.session import ConnectionState, MatrixSession, check

__all__ = ["ConnectionState", "MatrixSession", "check"]
