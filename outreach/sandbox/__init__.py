"""Faithful fakes of the five provider APIs, served on loopback (see DESIGN.md)."""
