"""A private copy of the packaged policies, and helpers to break one thing in it at a time."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from e2ecounsel.errors import PolicyError
from e2ecounsel.policy import PolicyInvalid, default_policy_dir, load_policy


def copy_policies(target: Path) -> Path:
    """The packaged policy folder copied to ``target`` (data files only)."""
    shutil.copytree(
        default_policy_dir(), target, ignore=shutil.ignore_patterns("*.py", "__pycache__")
    )
    return target


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"test setup: {old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def problems(folder: Path) -> list[str]:
    """Every problem loading ``folder`` reports (it must report some)."""
    with pytest.raises(PolicyInvalid) as info:
        load_policy(folder)
    assert isinstance(info.value, PolicyError)
    return list(info.value.problems)
