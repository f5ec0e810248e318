"""The engine's one exception tree, shaped by what the caller does next.

::

    OutreachError                 anything the engine raises on purpose
    ├── ConfigError               bad settings, cadence file or template: stop, fix, rerun (exit 2)
    ├── InputError                a bad input file as a whole (not one row): exit 2
    ├── RecordError               one bad record: report it with its place, go on with the batch
    ├── StoreError                the database is missing, outdated or unreachable
    └── ProviderError             a remote API failed
        ├── RetryableError        nothing was delivered; retry after ``retry_after`` seconds
        ├── PermanentError        bad address, opted out: suppress or fall back, never retry
        └── AmbiguousError        the request may have been processed: never re-send blindly

Vendor and SDK exceptions are translated into these at the edge of each connector and
channel (``raise PermanentError(...) from exc``).
"""

from __future__ import annotations

__all__ = [
    "AmbiguousError",
    "ConfigError",
    "InputError",
    "OutreachError",
    "PermanentError",
    "ProviderError",
    "RecordError",
    "RetryableError",
    "StoreError",
]


class OutreachError(Exception):
    """Base of every error the engine raises on purpose."""


class ConfigError(OutreachError):
    """The settings, the cadence file or a template is invalid.

    ``problems`` holds one line per problem, each naming the file, the place and the fix,
    so that a single run reports everything that is wrong.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = list(problems or [])
        super().__init__(message)

    def __str__(self) -> str:
        head = super().__str__()
        if not self.problems:
            return head
        return head + "\n" + "\n".join(f"  - {p}" for p in self.problems)


class InputError(OutreachError):
    """An input file cannot be read at all (missing, unknown format, no header)."""


class RecordError(OutreachError):
    """One input record is malformed; the rest of its batch goes on.

    ``where`` names the record (``line 12``, ``greenhouse candidate 4411``) and
    ``reason`` says what is wrong with it.
    """

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"{where}: {reason}")


class StoreError(OutreachError):
    """The database cannot be used as it is (unreachable, or its schema is outdated)."""


class ProviderError(OutreachError):
    """A remote provider (CRM or channel) failed. Subclasses say what to do next."""

    def __init__(self, message: str, *, provider: str = "", status: int | None = None) -> None:
        self.provider = provider
        self.status = status
        super().__init__(message)


class RetryableError(ProviderError):
    """Nothing was delivered; the same request may be retried after ``retry_after`` seconds."""

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, provider=provider, status=status)


class PermanentError(ProviderError):
    """The request can never succeed as it is (bad address, opted out, not a mobile)."""


class AmbiguousError(ProviderError):
    """The request may have been processed (timeout after it left): never re-send blindly."""
