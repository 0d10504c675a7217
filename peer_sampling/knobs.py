"""Declared knobs: a dataclass field that carries its documentation and its check.

The pure configuration classes (``CyclonConfig`` here, ``GossipConfig`` and
``LearnerConfig`` in ``gossipd.core``) declare each field once with
:func:`knob`; ``check_knobs`` in their ``__post_init__`` runs the checks, and
the daemon's config layer reads the same metadata to build its TOML keys,
environment variables, flags, ``--help`` and the documented example file. So a
new knob is one line in one class, and every driver sees it.

It lives in the lowest layer (no imports beyond the standard library) so that
every pure config class can use it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import MISSING, Field, field, fields
from typing import Any

Check = Callable[[Any], object]
"""Raises ValueError (or TypeError) with a sentence saying what is wrong; the
return value is ignored, so parsers such as ``parse_merge`` are checks too."""


class KnobError(ValueError):
    """One knob's value cannot be used; ``field`` names it (the code raising it knows which)."""

    def __init__(self, owner: str, field: str, reason: str) -> None:
        super().__init__(f"{owner}.{field}: {reason}" if owner else f"{field}: {reason}")
        self.field = field
        self.reason = reason


def knob(default: Any = MISSING, doc: str = "", check: Check | None = None, *,
         default_factory: Any = MISSING, **extra: Any) -> Any:
    """A dataclass field with its documentation (``doc``) and its ``check``.

    ``extra`` metadata is for drivers (the daemon reads ``flag``, ``example``).
    """
    metadata = {"doc": tidy(doc), "check": check, **extra}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def tidy(doc: str) -> str:
    """Whitespace-normalised paragraphs (a blank line separates them)."""
    return "\n\n".join(" ".join(p.split()) for p in re.split(r"\n\s*\n", doc) if p.strip())


def knob_fields(cls_or_obj: Any) -> tuple[Field[Any], ...]:
    """The dataclass fields declared with :func:`knob` (they have a ``doc``)."""
    return tuple(f for f in fields(cls_or_obj) if "doc" in f.metadata)


def check_knobs(obj: Any) -> None:
    """Run every knob's check on ``obj``; the first failure raises KnobError naming the field."""
    for f in knob_fields(obj):
        check = f.metadata.get("check")
        if check is None:
            continue
        try:
            check(getattr(obj, f.name))
        except KnobError:
            raise
        except (ValueError, TypeError) as exc:
            raise KnobError(type(obj).__name__, f.name, str(exc)) from None


# -- common checks ---------------------------------------------------------------


def _real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def positive(v: Any) -> None:
    """A finite number > 0."""
    if not (_real(v) and 0 < v < math.inf):
        raise ValueError(f"must be a finite number > 0, got {v!r}")


def positive_or_inf(v: Any) -> None:
    """A number > 0; ``inf`` means never."""
    if not (_real(v) and v > 0):
        raise ValueError(f"must be a number > 0 (inf = never), got {v!r}")


def non_negative(v: Any) -> None:
    """A finite number >= 0."""
    if not (_real(v) and 0 <= v < math.inf):
        raise ValueError(f"must be a finite number >= 0, got {v!r}")


def fraction_below_one(v: Any) -> None:
    """0 <= v < 1."""
    if not (_real(v) and 0 <= v < 1):
        raise ValueError(f"must be in [0, 1), got {v!r}")


def integer(low: int) -> Check:
    """An integer >= ``low`` (booleans are not integers here)."""

    def check(v: Any) -> None:
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"must be an integer >= {low}, got {v!r}")

    return check


def optional(check: Check) -> Check:
    """``None`` or whatever ``check`` accepts."""

    def optional_check(v: Any) -> None:
        if v is not None:
            check(v)

    return optional_check
