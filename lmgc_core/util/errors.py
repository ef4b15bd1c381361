"""One exception family, so callers can catch every lmgc failure with a single ``except``.

Each subclass names *what kind* of thing went wrong, because the fix differs: a corrupted file
needs a backup, a mismatched prior needs the right model, a missing plugin needs an install.

Bad input and bad options are also ``ValueError``s, as numcodecs' and Zarr's own codecs raise,
so code that catches ``ValueError`` around a codec keeps working with lmgc.
"""

from __future__ import annotations


class LMGCError(Exception):
    """Base class of every error lmgc raises on purpose."""


class StreamError(LMGCError, ValueError):
    """The compressed stream is malformed, truncated, extended or corrupted."""


class TruncatedStreamError(StreamError):
    """The stream ends before all the bytes its header promises."""


class OutOfMemoryError(StreamError):
    """Decoding needs more memory than this process may have: what the header declares (a
    damaged header can declare anything), or this machine's limits for an intact stream (a
    decode with fewer threads may fit). Not blamed on the stream's makers."""


class ChecksumError(StreamError):
    """Decoding finished but did not reproduce the original bytes (or a block failed its CRC)."""


class MismatchError(LMGCError, ValueError):
    """The stream was made with a different prior, model, backend, dtype or layout than the one
    offered for decoding. Decoding with anything else would silently produce garbage. ``what``:
    what differs, without the advice the message adds (said again where ``--force`` decoded
    past it); the message by default."""

    def __init__(self, message: str, what: str | None = None) -> None:
        super().__init__(message)
        self.what = message if what is None else what


class PluginError(LMGCError):
    """A serializer, prior, coder or stage is unknown, or its optional dependency is missing."""


class UnknownComponentError(PluginError):
    """No installed plugin registers this name. ``plugins_failed`` is true when some plugin
    failed to load, so the name may still be right (a missing package, not a typo)."""

    def __init__(
        self, message: str, plugins_failed: bool = False, kind: str = "", name: str = ""
    ) -> None:
        super().__init__(message)
        self.plugins_failed, self.kind, self.name = plugins_failed, kind, name


class ConfigError(LMGCError, ValueError):
    """A pipeline configuration is invalid (bad option, wrong type, unknown key)."""


class MissingModelError(ConfigError):
    """A model file or folder an option names is not there; ``path`` is the name given (a
    stream's decode says which model it was made with, and how to give its new place)."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


class UnknownOptionError(ConfigError):
    """A component was given options its factory does not take; ``unknown`` and ``valid`` say
    which (callers reason on these, never on the message's text)."""

    def __init__(self, kind: str, name: str, unknown: list[str], valid: list[str]) -> None:
        super().__init__(
            f"{kind} {name!r} has no option {', '.join(map(repr, unknown))}; "
            f"valid options: {', '.join(valid) or 'none'}"
        )
        self.kind, self.name, self.unknown, self.valid = kind, name, unknown, valid
