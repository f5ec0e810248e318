"""``python -m outreach``: the ``outreach`` command (how ``run --workers`` starts workers)."""

from __future__ import annotations

from outreach.cli import main

if __name__ == "__main__":
    main()
