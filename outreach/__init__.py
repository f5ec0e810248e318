"""Outreach engine: recruiting follow-up cadences across CRMs and channels.

The package is organised by data flow (see DESIGN.md): settings and the cadence file,
the store, the importer, and the command line. Connectors live in ``connectors`` and
channels in ``channels``.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
