"""Operator-editable policy data (TOML), shipped with the package."""
