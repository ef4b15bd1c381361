"""Checkpoint series on the command line: which file each checkpoint is coded against
(``lmgc compress --series``), and which file decoded earlier in the same run each archive needs
as its base (``lmgc decompress A.lmgc B.lmgc ...``).

Why keyframes: a checkpoint coded against the one before it is small, but reading it back needs
every checkpoint before it, back to one coded alone. ``--keyframe K`` codes every K-th file alone
(the first one always), so the chain is at most K long: K = 1 is every file alone (random
access, no gain), a large K the smallest series (one chain). See ``docs/series.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmgc_core.util.errors import ConfigError


def chain(
    inputs: Sequence[str], keyframe: int | None = None, base: str | None = None
) -> list[tuple[str, str | None]]:
    """``(input, base)`` for each input: the file before it, except every ``keyframe``-th file
    (the first is one), which is coded alone, or against ``base`` for the first one."""
    if keyframe is not None and keyframe < 1:
        raise ConfigError(f"--keyframe must be at least 1, not {keyframe}")
    pairs: list[tuple[str, str | None]] = []
    for i, path in enumerate(inputs):
        if i == 0:
            pairs.append((path, base))
        elif keyframe is not None and i % keyframe == 0:
            pairs.append((path, None))
        else:
            pairs.append((path, inputs[i - 1]))
    return pairs


@dataclass
class Planned:
    """One archive of a ``decompress`` run: where it goes and what it needs."""

    archive: str
    output: str
    source_sha256: str | None
    """The SHA-256 of the file it rebuilds, when the archive records it."""
    base: dict[str, Any] | None
    """The base file the archive records (name, size, SHA-256), or ``None``."""


def bases(plan: Sequence[Planned], given: str | None) -> list[str | None]:
    """The base file to decode each archive with: the output of an earlier archive of the run
    that rebuilds the recorded base (same name, and the same SHA-256 where the archive says),
    else ``given`` (``--base``: checked here for an archive after the first, whose own check
    would come after the archives before it were written; the first's decode checks it).
    Refused (``ConfigError``, before anything is decoded) when an archive needs a base that
    neither provides."""
    chosen: list[str | None] = []
    digests: dict[str, str | None] = {}  # of ``given``: each hash computed once for the plan
    for i, item in enumerate(plan):
        if item.base is None:
            chosen.append(None)
            continue
        name, digest = item.base.get("name"), item.base.get("sha256")
        candidates = [
            earlier
            for earlier in reversed(plan[:i])
            if Path(earlier.output).name == name and earlier.source_sha256 in (None, digest)
        ]
        sure = [c for c in candidates if c.source_sha256 == digest]
        if not sure and len(candidates) > 1:  # compact archives record no file hash
            raise ConfigError(
                f"{item.archive} was compressed against {name!r}, and "
                f"{' and '.join(c.archive for c in candidates[:2])} both decompress to a file "
                "of that name: list only the one it was coded against before it, or give that "
                "file with --base"
            )
        pick = sure or candidates
        found = pick[0].output if pick else None
        later = [p.archive for p in plan[i + 1 :] if Path(p.output).name == name]
        # checked here only where the archive's own check would come too late: the first
        # archive's decode checks its base before anything is written (hashed once, not twice)
        wrong = (
            found is None
            and given is not None
            and bool(later or i > 0)
            and not _holds(given, item.base, digests)
        )
        if wrong and later:
            raise ConfigError(  # not left to the archive's decode, after earlier ones wrote
                f"{item.archive} was compressed against {name!r}, which {later[0]} (later in "
                f"the list) decompresses to: list {later[0]} before it"
            )
        if wrong:
            from lmgc_core.files.base_file import describe_record

            raise ConfigError(  # the archive's own check would come after earlier ones wrote
                f"--base {given} is not the base {item.archive} was compressed against: "
                f"{describe_record(item.base)}; nothing was written"
            )
        if found is None and given is None:
            hint = (
                f"decompress {later[0]} before it"
                if later
                else f"decompress the archive of {name} before it in the same command"
            )
            raise ConfigError(
                f"{item.archive} was compressed against {name!r} (SHA-256 {digest}): {hint}, "
                "or give that file with --base"
            )
        chosen.append(found or given)
    return chosen


def _holds(path: str, record: dict[str, Any], digests: dict[str, str | None]) -> bool:
    """Whether the file ``path`` is the base ``record`` describes (its hash; a backup under
    another name is the base all the same). ``digests``: the hashes of ``path`` computed so
    far, by algorithm (``None``: unreadable), which this adds to."""
    from lmgc_core.files.base_file import file_digest
    from lmgc_core.files.writers import checked_hash

    algorithm = checked_hash(record)
    if algorithm not in digests:
        try:
            with open(path, "rb") as f:
                digests[algorithm] = file_digest(f, (algorithm,))[1].get(algorithm)
        except OSError:
            digests[algorithm] = None
    return digests[algorithm] is not None and digests[algorithm] == record.get(algorithm)
