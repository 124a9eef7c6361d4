"""Named fields of JSON events -> feature vectors (DESIGN.md §7): the `--fields` spec and its decoder.

`--fields amount:log1p,merchant.risk,hour,card_present` takes each dotted PATH from the event
object, numbers as they are and booleans as 1/0, then applies the optional TRANSFORM. A record
that lacks a field, holds a non-number there or falls outside a transform's domain becomes one
`Reject` (`missing_field`, `not_numeric`, `out_of_domain`) naming the path; the rest of the
batch is decoded column by column with one NumPy call per field.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["TRANSFORMS", "FieldSpec", "parse_fields", "parse_path"]


def _log1p_domain(x: np.ndarray) -> np.ndarray:
    return x > -1.0


def _sqrt_domain(x: np.ndarray) -> np.ndarray:
    return x >= 0.0


def _log_domain(x: np.ndarray) -> np.ndarray:
    return x > 0.0


# name -> (function on float64 arrays, domain mask, domain in words)
TRANSFORMS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[..., Any], str]] = {
    "log1p": (np.log1p, _log1p_domain, "a value > -1"),
    "log": (np.log, _log_domain, "a value > 0"),
    "sqrt": (np.sqrt, _sqrt_domain, "a value >= 0"),
}

_KEY = re.compile(r"^[^.:,\s]+$")


@dataclass(frozen=True)
class FieldSpec:
    """One feature: a dotted path into the event object and an optional transform."""

    path: tuple[str, ...]
    transform: str | None = None

    @property
    def name(self) -> str:
        """The dotted path, as written in `--fields`."""
        return ".".join(self.path)

    @property
    def text(self) -> str:
        """`path[:transform]`, the form the model's schema stores."""
        return self.name if self.transform is None else f"{self.name}:{self.transform}"


def parse_path(text: str) -> tuple[str, ...]:
    """`card.age_days` -> ("card", "age_days"); ValueError on an empty or malformed path."""
    parts = tuple(text.strip().split("."))
    if not text.strip() or not all(_KEY.match(p) for p in parts):
        raise ValueError(f"{text!r} is not a dotted field path such as amount or card.age_days")
    return parts


def parse_fields(spec: str) -> tuple[FieldSpec, ...]:
    """Parse `PATH[:TRANSFORM],...`; ValueError with a message that says what to fix."""
    out: list[FieldSpec] = []
    for item in spec.split(","):
        path_text, _, transform = item.strip().partition(":")
        path = parse_path(path_text)
        if transform and transform not in TRANSFORMS:
            raise ValueError(
                f"{item.strip()!r}: unknown transform {transform!r}; "
                f"expected one of {', '.join(TRANSFORMS)}"
            )
        out.append(FieldSpec(path, transform or None))
    names = [f.name for f in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"field {dup[0]!r} is named more than once")
    return tuple(out)


def schema_texts(fields: Sequence[FieldSpec] | None) -> list[str] | None:
    """The fields as the model's schema stores them (None: the event carries a vector)."""
    return None if fields is None else [f.text for f in fields]
