"""Where the shipped defaults live, in a checkout and in an installed wheel."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["default_config_dir", "resolve_config"]

DEFAULT_CONFIG_NAME = "config/cadences.yaml"


def default_config_dir() -> Path:
    """The ``config/`` folder that ships with the engine.

    In a wheel it is packaged as ``outreach/_config``; in a checkout (or an editable
    install) it is the ``config/`` folder beside the package.
    """
    packaged = Path(str(resources.files("outreach"))) / "_config"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "config"


def resolve_config(value: str | Path) -> Path:
    """Turn ``OUTREACH_CONFIG`` into a path.

    An explicit path is used as given. The default ``config/cadences.yaml`` is taken from
    the working directory when it exists there (a user's own copy), else from the
    defaults shipped with the engine.
    """
    path = Path(value)
    if path.exists() or str(value) != DEFAULT_CONFIG_NAME:
        return path
    return default_config_dir() / "cadences.yaml"
