"""Model files: centres, weights and the model's schema, read and written.

Used by `streamkm model import` and `export`. Reading validates everything once, at this edge:
what comes back is a finite float64 (k, d) array with k, d >= 1 and, if the file gives them, k
finite non-negative weights, d named fields and a scaler of d features. Nothing read from disk is
ever unpickled or evaluated.

Formats:
- `.npy`: a 2-D array of real numbers (numpy.save); object arrays and pickles are refused.
- `.json`: `[[x, ...], ...]`, or an object (every key but "centers" optional; others, such as
  "model" and "version" that `export` adds, are ignored):

      {"fields": ["amount:log1p", "merchant.risk", ...],   one `path[:transform]` per feature
       "centers": [[x, ...], ...],                          in original units
       "scaler": {"mean": [...], "scale": [...], "var": [...], "n_samples_seen": W},
       "weights": [w, ...]}

  The scaler's keys are the attributes of a fitted scikit-learn `StandardScaler`, with or
  without the trailing underscore (`mean_`, `scale_`, `n_samples_seen_`). "mean" and "scale" are
  required; "var" is written for scikit-learn and not read (the scale is what standardizes);
  "n_samples_seen", the weight of the rows the scaler stands for, defaults to the sum of the
  weights (1 if that is 0). A file with a scaler becomes a model with `--scale standard`.
- `.csv`: one centre per line, comma-separated numbers. If any field of the first line is not a
  number, that line is a header and is skipped; a non-number anywhere else is an error.

Export writes `.json` with everything above, floats in shortest round-trip form, so importing it
gives back bit-identical centres, mean and scale. `.npy` holds the centres alone, so export
refuses it for a model with fields or a scaler: the centres without the scaler would make
scikit-learn label raw records otherwise than `serve`, which measures in standardized units.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from engine import Scaler

from .fields import parse_fields

__all__ = [
    "EXPORT_FORMATS",
    "FORMATS",
    "CenterFile",
    "ModelFileError",
    "exact_scaler",
    "read_centers",
    "scaler_json",
    "write_centers",
]

FORMATS = (".npy", ".json", ".csv")
EXPORT_FORMATS = (".npy", ".json")
_NPY_MAGIC = b"\x93NUMPY"
_PICKLE_PROTOCOL = 0x80  # first byte of every pickle of protocol 2 and later
_ZIP_MAGIC = b"PK\x03\x04"
# The engine (like scikit-learn) treats a smaller spread as none and standardizes with 1.
_TINY_SCALE = 10 * np.finfo(np.float64).eps
# M2 values tried on each side of scale**2 * W when looking for one that gives the scale back.
_M2_SEARCH = 8


class ModelFileError(ValueError):
    """A model file that cannot be used; the message says what to fix."""


@dataclass(frozen=True, eq=False)
class CenterFile:
    """What a model file holds: centres float64 (k, d), and what else the file gave.

    `fields` are the normalised `path[:transform]` texts; `has_schema` is True when the file
    states a schema at all (a JSON "fields" or "scaler" key, even null), so that a replace from
    a file that says nothing about it can keep the model's.
    """

    centers: np.ndarray
    weights: np.ndarray | None = None
    fields: tuple[str, ...] | None = None
    scaler: Scaler | None = None
    has_schema: bool = False


def read_centers(path: str | Path) -> CenterFile:
    """Read and validate a model file; raises ModelFileError naming the file and the problem."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ModelFileError(
            f"{path}: unknown extension {path.suffix or '(none)'!r}; "
            f"use one of {', '.join(FORMATS)} (pickles are never loaded)"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        if suffix == ".npy":
            return _validated({"centers": _from_npy(data)})
        if suffix == ".json":
            return _validated(_from_json(data))
        return _validated({"centers": _from_csv(data)})
    except ModelFileError as exc:
        raise ModelFileError(f"{path}: {exc}") from None


def write_centers(
    path: str | Path,
    centers: np.ndarray,
    extra: dict[str, Any] | None = None,
    *,
    fields: Sequence[str] | None = None,
    scaler: Scaler | None = None,
) -> None:
    """Write a model file by extension: `.json` (`{"fields", "centers", "scaler", **extra}`)
    or `.npy` (the centres alone, refused for a model with fields or a scaler).

    JSON floats are written in shortest round-trip form, so reading the file back gives
    bit-identical float64 centres, mean and scale.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    c = np.ascontiguousarray(centers, dtype=np.float64)
    if suffix == ".npy":
        schema = [
            what
            for what, present in (("named fields", fields), ("a standard scaler", scaler))
            if present is not None
        ]
        if schema:
            raise ModelFileError(
                f"{path}: the model has {' and '.join(schema)}, which .npy cannot hold (it holds "
                "the centres alone, and labels computed from them alone would differ from "
                "serve's); export to .json instead"
            )
        with open(path, "wb") as out:
            np.save(out, c, allow_pickle=False)
    elif suffix == ".json":
        doc = {
            "fields": None if fields is None else list(fields),
            "centers": c.tolist(),
            "scaler": None if scaler is None else scaler_json(scaler),
            **(extra or {}),
        }
        path.write_bytes(orjson.dumps(doc))
    else:
        raise ModelFileError(
            f"{path}: export writes .npy or .json, not {path.suffix or '(none)'!r}"
        )


def scaler_json(scaler: Scaler) -> dict[str, Any]:
    """The scaler under the names of a fitted scikit-learn `StandardScaler`'s attributes."""
    return {
        "mean": scaler.mean.tolist(),
        "scale": scaler.scale.tolist(),
        "var": scaler.var.tolist(),
        "n_samples_seen": scaler.weight,
    }


def exact_scaler(mean: np.ndarray, scale: np.ndarray, weight: float) -> Scaler:
    """`Scaler.from_scale`, with each M2 chosen so that the scaler's scale is `scale` to the bit.

    The scaler keeps M2 = scale**2 * W and computes scale = sqrt(M2 / W); rounding can leave
    that one ulp off the scale it was given. A few M2 values next to scale**2 * W are tried
    instead: one always gives the scale back when it came from a scaler of the same W (every
    export), and nearly always otherwise; where none does, the nearest is kept (one ulp).
    Raises ValueError for a mean and scale that no scaler can hold.
    """
    base = Scaler.from_scale(mean, scale, weight)
    s = np.asarray(scale, dtype=np.float64)
    off = np.flatnonzero(base.scale != s)
    if off.size == 0:
        return base
    m2 = base.m2.copy()
    for t in off.tolist():
        m2[t] = _exact_m2(float(s[t]), float(base.weight), float(m2[t]))
    m2.setflags(write=False)
    return Scaler(base.weight, base.mean, m2)


def _exact_m2(scale: float, weight: float, m2: float) -> float:
    """The M2 next to `m2` whose sqrt(M2 / weight) is nearest `scale`, the first exact one."""
    w = np.float64(weight)
    best, best_error = m2, abs(float(np.sqrt(np.float64(m2) / w)) - scale)
    up = down = np.float64(m2)
    for _ in range(_M2_SEARCH):
        up, down = np.nextafter(up, np.inf), np.nextafter(down, 0.0)
        for candidate in (up, down):
            error = abs(float(np.sqrt(candidate / w)) - scale)
            if error < best_error:
                best, best_error = float(candidate), error
                if error == 0.0:
                    return best
    return best


def _from_npy(data: bytes) -> np.ndarray:
    # Checked before numpy sees the bytes, so that a pickle gets a message of its own.
    if not data.startswith(_NPY_MAGIC):
        if data[:1] == bytes([_PICKLE_PROTOCOL]):
            raise ModelFileError("is a pickle, which is never loaded; save with numpy.save")
        if data.startswith(_ZIP_MAGIC):
            raise ModelFileError("is an .npz archive; save the one centres array with numpy.save")
        raise ModelFileError("is not a .npy file (no NUMPY header)")
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "pickled" in str(exc):
            raise ModelFileError(
                "holds an object array (a pickle), which is never loaded"
            ) from None
        raise ModelFileError(f"is not a readable .npy file: {exc}") from None
    except (EOFError, OSError) as exc:
        raise ModelFileError(f"is a truncated .npy file: {exc}") from None
    kind = arr.dtype.kind
    if kind not in "biuf" or arr.dtype.names is not None:
        raise ModelFileError(f"holds {arr.dtype} values; the centres must be real numbers")
    return arr


def _from_json(data: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ModelFileError(
            f"is not valid JSON ({exc}); NaN and infinity are not allowed"
        ) from None
    if not isinstance(doc, dict):
        return {"centers": doc}
    if "centers" not in doc:
        raise ModelFileError('a JSON object needs a "centers" key: {"centers": [[...], ...]}')
    return doc


def _from_csv(data: bytes) -> list[list[float]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ModelFileError("is not UTF-8 text") from None
    rows = [row for row in csv.reader(io.StringIO(text)) if any(f.strip() for f in row)]
    if rows and not all(_is_number(f) for f in rows[0]):
        rows = rows[1:]  # a header line
    out = []
    for line, row in enumerate(rows, start=1):
        for field in row:
            if not _is_number(field):
                raise ModelFileError(f"row {line}: {field.strip()!r} is not a number")
        out.append([float(f) for f in row])
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _validated(doc: dict[str, Any]) -> CenterFile:
    c = _numeric_array(doc["centers"], "centres")
    if c.size == 0:
        raise ModelFileError(f"the centres are empty (shape {c.shape}); need k >= 1 rows of d >= 1")
    if c.ndim != 2:
        raise ModelFileError(f"the centres must be a 2-D (k, d) array, got {c.ndim}-D {c.shape}")
    if not np.isfinite(c).all():
        bad = sorted({int(i) for i in np.argwhere(~np.isfinite(c))[:, 0]})
        raise ModelFileError(f"centres {bad[:10]} hold NaN or infinity")
    w = None
    if doc.get("weights") is not None:
        w = _numeric_array(doc["weights"], "weights")
        if w.shape != (c.shape[0],):
            raise ModelFileError(f"need one weight per centre ({c.shape[0]}), got shape {w.shape}")
        if not np.isfinite(w).all() or np.any(w < 0):
            raise ModelFileError("the weights must be finite and >= 0")
    d = c.shape[1]
    fields = None if doc.get("fields") is None else _fields(doc["fields"], d)
    scaler = None if doc.get("scaler") is None else _scaler(doc["scaler"], d, w)
    return CenterFile(c, w, fields, scaler, has_schema="fields" in doc or "scaler" in doc)


def _fields(value: Any, d: int) -> tuple[str, ...]:
    """The `path[:transform]` texts, one per feature, normalised as `--fields` stores them."""
    if not isinstance(value, list) or not all(isinstance(f, str) for f in value):
        raise ModelFileError(
            f'"fields" must be a list of "path[:transform]" strings or null, got {value!r}'
        )
    if len(value) != d:
        raise ModelFileError(f'"fields" names {len(value)} fields, but the centres have d={d}')
    try:
        specs = parse_fields(",".join(value))
    except ValueError as exc:
        raise ModelFileError(f'"fields": {exc}') from None
    if len(specs) != d:
        raise ModelFileError(f'"fields": a field may not contain a comma: {value!r}')
    return tuple(f.text for f in specs)


def _scaler(value: Any, d: int, weights: np.ndarray | None) -> Scaler:
    if not isinstance(value, dict):
        raise ModelFileError(
            f'"scaler" must be an object {{"mean": [...], "scale": [...]}} or null, '
            f"got {_kind(value)}"
        )
    arrays = {}
    for name in ("mean", "scale"):
        arr = _numeric_array(_scaler_key(value, name, required=True), f"scaler {name}")
        if arr.shape != (d,):
            raise ModelFileError(
                f"the scaler {name} needs one number per feature (d={d}), got shape {arr.shape}"
            )
        arrays[name] = arr
    mean, scale = arrays["mean"], arrays["scale"]
    small = np.flatnonzero(~(scale >= _TINY_SCALE))
    if small.size:
        t = int(small[0])
        raise ModelFileError(
            f"scaler scale[{t}] is {float(scale[t])!r}; every scale must be a positive number of "
            f"at least {_TINY_SCALE:.3g} (scikit-learn writes 1 for a feature with no spread)"
        )
    seen = _scaler_key(value, "n_samples_seen", required=False)
    if seen is None:
        total = 0.0 if weights is None else float(weights.sum())
        seen = total if total > 0 else 1.0
    elif isinstance(seen, bool) or not isinstance(seen, int | float) or not seen > 0:
        raise ModelFileError(
            f"the scaler's n_samples_seen must be a number > 0 (the rows it stands for), "
            f"got {seen!r}"
        )
    with np.errstate(over="ignore"):
        overflows = not np.isfinite(scale * scale * float(seen)).all()
    if overflows:
        raise ModelFileError(
            f"the scaler cannot be held: scale**2 * n_samples_seen ({seen!r}) overflows float64"
        )
    return exact_scaler(mean, scale, float(seen))


def _scaler_key(obj: dict[str, Any], name: str, *, required: bool) -> Any:
    """obj[name], or scikit-learn's obj[name + "_"]."""
    present = [key for key in (name, name + "_") if key in obj]
    if len(present) == 2:
        raise ModelFileError(f'the scaler gives both "{name}" and "{name}_"; keep one')
    if not present:
        if required:
            raise ModelFileError(f'the scaler needs "{name}" (or scikit-learn\'s "{name}_")')
        return None
    return obj[present[0]]


def _numeric_array(value: Any, what: str) -> np.ndarray:
    """A float64 array of `value`, refusing ragged rows, strings, booleans and other non-numbers."""
    if isinstance(value, np.ndarray):
        return np.array(value, dtype=np.float64)
    if not isinstance(value, list):
        raise ModelFileError(f"the {what} must be a list of numbers or of rows, got {_kind(value)}")
    rows = value
    if rows and all(isinstance(r, list) for r in rows):
        lengths = {len(r) for r in rows}
        if len(lengths) > 1:
            raise ModelFileError(f"ragged {what}: rows have lengths {sorted(lengths)}")
        items = [x for r in rows for x in r]
    else:
        items = rows
    for x in items:
        if isinstance(x, bool) or not isinstance(x, int | float):
            raise ModelFileError(f"the {what} hold {_kind(x)} {x!r}; only numbers are allowed")
    return np.array(rows, dtype=np.float64)


def _kind(value: Any) -> str:
    return "an object" if isinstance(value, dict) else f"a {type(value).__name__}"
