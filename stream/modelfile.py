"""Model files: centres (and optional weights) in `.npy`, `.json` or `.csv`, read and written.

Used by `streamkm model import` and `export`. Reading validates everything once, at this edge:
what comes back is a finite float64 (k, d) array with k, d >= 1 and, if given, k finite
non-negative weights. Nothing read from disk is ever unpickled or evaluated.

Formats:
- `.npy`: a 2-D array of real numbers (numpy.save); object arrays and pickles are refused.
- `.json`: `[[x, ...], ...]`, or `{"centers": [[x, ...], ...], "weights": [w, ...]}` (other keys,
  such as those `export` adds, are ignored).
- `.csv`: one centre per line, comma-separated numbers. If any field of the first line is not a
  number, that line is a header and is skipped; a non-number anywhere else is an error.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

__all__ = [
    "EXPORT_FORMATS",
    "FORMATS",
    "CenterFile",
    "ModelFileError",
    "read_centers",
    "write_centers",
]

FORMATS = (".npy", ".json", ".csv")
EXPORT_FORMATS = (".npy", ".json")
_NPY_MAGIC = b"\x93NUMPY"
_PICKLE_PROTOCOL = 0x80  # first byte of every pickle of protocol 2 and later
_ZIP_MAGIC = b"PK\x03\x04"


class ModelFileError(ValueError):
    """A model file that cannot be used; the message says what to fix."""


@dataclass(frozen=True, eq=False)
class CenterFile:
    """Centres read from a file: float64 (k, d), and weights (k,) when the file had them."""

    centers: np.ndarray
    weights: np.ndarray | None = None


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
    centers: Any
    weights: Any = None
    try:
        if suffix == ".npy":
            centers = _from_npy(data)
        elif suffix == ".json":
            centers, weights = _from_json(data)
        else:
            centers = _from_csv(data)
        return _validated(centers, weights)
    except ModelFileError as exc:
        raise ModelFileError(f"{path}: {exc}") from None


def write_centers(
    path: str | Path, centers: np.ndarray, extra: dict[str, Any] | None = None
) -> None:
    """Write centres as `.npy` (the array alone) or `.json` (`{"centers", **extra}`), by extension.

    JSON floats are written in shortest round-trip form, so reading the file back gives
    bit-identical float64 centres.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    c = np.ascontiguousarray(centers, dtype=np.float64)
    if suffix == ".npy":
        with open(path, "wb") as out:
            np.save(out, c, allow_pickle=False)
    elif suffix == ".json":
        path.write_bytes(orjson.dumps({"centers": c.tolist(), **(extra or {})}))
    else:
        raise ModelFileError(
            f"{path}: export writes .npy or .json, not {path.suffix or '(none)'!r}"
        )


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


def _from_json(data: bytes) -> tuple[Any, Any]:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ModelFileError(
            f"is not valid JSON ({exc}); NaN and infinity are not allowed"
        ) from None
    if isinstance(doc, dict):
        if "centers" not in doc:
            raise ModelFileError('a JSON object needs a "centers" key: {"centers": [[...], ...]}')
        return doc["centers"], doc.get("weights")
    return doc, None


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


def _validated(centers: Any, weights: Any) -> CenterFile:
    c = _numeric_array(centers, "centres")
    if c.size == 0:
        raise ModelFileError(f"the centres are empty (shape {c.shape}); need k >= 1 rows of d >= 1")
    if c.ndim != 2:
        raise ModelFileError(f"the centres must be a 2-D (k, d) array, got {c.ndim}-D {c.shape}")
    if not np.isfinite(c).all():
        bad = sorted({int(i) for i in np.argwhere(~np.isfinite(c))[:, 0]})
        raise ModelFileError(f"centres {bad[:10]} hold NaN or infinity")
    if weights is None:
        return CenterFile(c)
    w = _numeric_array(weights, "weights")
    if w.shape != (c.shape[0],):
        raise ModelFileError(f"need one weight per centre ({c.shape[0]}), got shape {w.shape}")
    if not np.isfinite(w).all() or np.any(w < 0):
        raise ModelFileError("the weights must be finite and >= 0")
    return CenterFile(c, w)


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
