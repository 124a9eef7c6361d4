"""Named fields of JSON events -> feature vectors (DESIGN.md §7): the `--fields` spec and its decoder.

`--fields amount:log1p,merchant.risk,hour,card_present` takes each dotted PATH from the event
object, numbers as they are and booleans as 1/0, then applies the optional TRANSFORM. A record
that lacks a field, holds a non-number there or falls outside a transform's domain becomes one
problem (`missing_field`, `not_numeric`, `out_of_domain`) naming the path; the rest of the
batch is decoded column by column with one NumPy call per field.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "TRANSFORMS",
    "FieldSpec",
    "column_rows",
    "field_rows",
    "json_type",
    "parse_fields",
    "parse_path",
    "path_value",
    "schema_texts",
]


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


# --- JSON objects -> rows --------------------------------------------------------------------

# (position, reason, message): why one object gave no row; the data path makes it a dead letter,
# the request path a 400.
Problem = tuple[int, str, str]


def field_rows(
    objs: list[dict[str, Any]], fields: Sequence[FieldSpec], good: list[int], problems: list[Any]
) -> tuple[np.ndarray, np.ndarray]:
    """The feature rows of JSON objects: (X float32 (m, d) of the usable objects, their
    positions in `objs`). For each other object, one problem (good[position], reason, message)
    is appended to `problems`, naming the first field at fault."""
    A = _fast_columns(objs, fields)
    row_ok = np.ones(len(objs), bool)
    if A is None:
        A = _slow_columns(objs, fields, good, problems, row_ok)
    return column_rows(A, fields, good, problems, row_ok)


def column_rows(
    A: np.ndarray,
    fields: Sequence[FieldSpec],
    good: list[int],
    problems: list[Any],
    row_ok: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The feature rows of float64 field columns `A` (one row per object, before transforms):
    (X float32 (m, d) of the usable rows, their positions in `A`). Rows where `row_ok` is False
    already have their problem; each other row outside a transform's domain or not finite gets
    one, (good[position], reason, message), appended to `problems`."""
    if row_ok is None:
        row_ok = np.ones(A.shape[0], bool)
    A = _transform(A, fields, good, problems, row_ok)
    with np.errstate(over="ignore", invalid="ignore"):
        X = A.astype(np.float32)
    finite = np.isfinite(X).all(axis=1)
    for j in np.flatnonzero(row_ok & ~finite).tolist():
        bad = int(np.flatnonzero(~np.isfinite(X[j]))[0])
        problems.append(
            (
                good[j],
                "non_finite",
                f"field {fields[bad].text!r} is not finite (NaN, infinity, or beyond float32)",
            )
        )
    row_ok &= finite
    keep = np.flatnonzero(row_ok)
    if len(keep) < A.shape[0]:
        X = np.ascontiguousarray(X[keep])
    return X, keep


def ids_at(objs: list[dict[str, Any]], path: tuple[str, ...]) -> list[Any]:
    """The id at `path` of each object (None where absent)."""
    return _ids(objs, path)


def json_type(x: Any) -> str:
    if x is None:
        return "null"
    if type(x) is bool:
        return "a boolean"
    if type(x) is str:
        return "a string"
    if type(x) is dict:
        return "an object"
    if type(x) is list:
        return "an array"
    return "a number"


def path_value(obj: Any, path: tuple[str, ...]) -> Any:
    """The value at a dotted path of a JSON object, or None where the path does not lead."""
    for key in path:
        obj = obj.get(key) if type(obj) is dict else None
    return obj


def _column(objs: list[dict[str, Any]], path: tuple[str, ...]) -> list[Any]:
    """The value at `path` of every object; KeyError or TypeError when any lacks it."""
    if len(path) == 1:
        (a,) = path
        return [o[a] for o in objs]
    if len(path) == 2:
        a, b = path
        return [o[a][b] for o in objs]
    out = []
    for o in objs:
        v: Any = o
        for key in path:
            v = v[key]
        out.append(v)
    return out


def _fast_columns(objs: list[dict[str, Any]], fields: Sequence[FieldSpec]) -> np.ndarray | None:
    """All fields of all objects with one NumPy call per field; None when any needs a closer look."""
    A = np.empty((len(objs), len(fields)), np.float64)
    for t, f in enumerate(fields):
        try:
            # Let NumPy infer the dtype: a string, null or object shows up as a non-numeric dtype
            # instead of being silently converted (np.array(["1.5"], float) would parse it).
            col = np.array(_column(objs, f.path))
        except (KeyError, TypeError, IndexError, ValueError, OverflowError):
            return None
        if col.ndim != 1 or col.dtype.kind not in "biuf":
            return None
        A[:, t] = col
    return A


def _slow_columns(
    objs: list[dict[str, Any]],
    fields: Sequence[FieldSpec],
    good: list[int],
    rejects: list[Any],
    row_ok: np.ndarray,
) -> np.ndarray:
    """Record by record: the first problem of each bad record is appended to `rejects`."""
    A = np.zeros((len(objs), len(fields)), np.float64)
    for j, o in enumerate(objs):
        for t, f in enumerate(fields):
            value, problem = _lookup(o, f)
            if problem is not None:
                rejects.append((good[j], *problem))
                row_ok[j] = False
                break
            A[j, t] = value
    return A


def _lookup(obj: dict[str, Any], f: FieldSpec) -> tuple[float, tuple[str, str] | None]:
    v: Any = obj
    for depth, key in enumerate(f.path):
        if type(v) is not dict or key not in v:
            where = ".".join(f.path[:depth]) or "the event"
            if type(v) is not dict:
                return 0.0, (
                    "missing_field",
                    f"field {f.name!r} is missing ({where} is {json_type(v)})",
                )
            return 0.0, ("missing_field", f"field {f.name!r} is missing")
        v = v[key]
    t = type(v)
    if t is bool:
        return float(v), None
    if t is int or t is float:
        try:
            return float(v), None
        except OverflowError:
            return float("inf"), None
    return 0.0, (
        "not_numeric",
        f"field {f.name!r} is {json_type(v)}; expected a number or a boolean",
    )


def _transform(
    A: np.ndarray,
    fields: Sequence[FieldSpec],
    good: list[int],
    rejects: list[Any],
    row_ok: np.ndarray,
) -> np.ndarray:
    """Apply each field's transform; values outside its domain reject their record."""
    for t, f in enumerate(fields):
        if f.transform is None:
            continue
        fn, domain, words = TRANSFORMS[f.transform]
        col = A[:, t]
        inside = domain(col) | np.isnan(col)  # NaN is reported as non-finite, not out of domain
        for j in np.flatnonzero(row_ok & ~inside).tolist():
            rejects.append(
                (
                    good[j],
                    "out_of_domain",
                    f"{f.transform} of field {f.name!r} needs {words}, got {float(col[j])!r}",
                )
            )
            row_ok[j] = False
        with np.errstate(invalid="ignore", divide="ignore"):
            A[:, t] = np.where(inside, fn(np.where(inside, col, 1.0)), col)
    return A


def _ids(objs: list[dict[str, Any]], path: tuple[str, ...]) -> list[Any]:
    if len(path) == 1:
        (a,) = path
        return [o.get(a) for o in objs]
    return [path_value(o, path) for o in objs]
