"""e2ecounsel: end-to-end encrypted counseling on Matrix."""

__version__ = "0.1.0"
