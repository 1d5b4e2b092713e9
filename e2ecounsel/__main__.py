"""``python -m e2ecounsel``: the same as the ``e2ecounsel`` command."""

from e2ecounsel.cli import main

raise SystemExit(main())
