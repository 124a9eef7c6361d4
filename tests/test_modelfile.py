"""Specification of model files (stream/modelfile.py): what `streamkm model import` accepts."""

from __future__ import annotations

import pickle

import numpy as np
import orjson
import pytest

from model.files import ModelFileError, read_centers, write_centers

CENTERS = [[0.0, 1.5], [-2.25, 3.0], [1e-3, 7.0]]


def _write(path, content) -> str:
    if isinstance(content, np.ndarray):
        np.save(path, content, allow_pickle=True)
    else:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


@pytest.mark.parametrize(
    "name, content",
    [
        ("c.npy", np.array(CENTERS)),
        ("c.npy", np.array(CENTERS, dtype=np.float32)),
        ("c.json", orjson.dumps(CENTERS)),
        ("c.json", orjson.dumps({"centers": CENTERS})),
        ("c.json", orjson.dumps({"centers": CENTERS, "version": 9, "model": "m"})),
        ("c.csv", "0,1.5\n-2.25,3\n0.001,7\n"),
        ("c.csv", "x,y\n0,1.5\n-2.25, 3\n1e-3,7\n\n"),
        ("c.CSV", "\ufeff0,1.5\r\n-2.25,3\r\n0.001,7\r\n"),
    ],
)
def test_every_format_reads_the_same_centres(tmp_path, name, content):
    got = read_centers(_write(tmp_path / name, content))
    assert got.centers.dtype == np.float64
    np.testing.assert_allclose(got.centers, CENTERS, rtol=1e-6)
    assert got.weights is None


def test_json_weights_come_with_the_centres(tmp_path):
    path = _write(tmp_path / "c.json", orjson.dumps({"centers": CENTERS, "weights": [1, 0, 2.5]}))
    assert read_centers(path).weights.tolist() == [1.0, 0.0, 2.5]


@pytest.mark.parametrize("name", ["out.npy", "out.json"])
def test_written_centres_read_back_bit_identical(tmp_path, name):
    centers = np.random.default_rng(0).normal(size=(5, 3)) * 1e3
    write_centers(tmp_path / name, centers, {"weights": [1.0] * 5})
    assert read_centers(tmp_path / name).centers.tobytes() == centers.tobytes()


BAD_FILES = [
    ("c.npy", np.array([1.0, 2.0]), "must be a 2-D"),
    ("c.npy", np.zeros((2, 2, 2)), "must be a 2-D"),
    ("c.npy", np.zeros((0, 3)), "empty"),
    ("c.npy", np.array([[1.0, np.nan]]), "NaN or infinity"),
    ("c.npy", np.array([[1.0, np.inf], [0, 0]]), "centres [0] hold NaN or infinity"),
    ("c.npy", np.array([["a", "b"]]), "must be real numbers"),
    ("c.npy", np.array([[1, "a"]], dtype=object), "object array"),
    ("c.npy", pickle.dumps([[1.0, 2.0]]), "is a pickle"),
    ("c.npy", b"PK\x03\x04rest of a zip", ".npz archive"),
    ("c.npy", b"1,2\n3,4\n", "not a .npy file"),
    ("c.npy", np.lib.format.MAGIC_PREFIX + b"\x01", "not a readable .npy"),
    ("c.json", b"[[1, 2], [3]]", "ragged centres: rows have lengths [1, 2]"),
    ("c.json", b"[[1, NaN]]", "not valid JSON"),
    ("c.json", b"[[1, 1e400]]", "not valid JSON"),
    ("c.json", b'[[1, "2"]]', "only numbers"),
    ("c.json", b"[[1, true]]", "only numbers"),
    ("c.json", b"[[1, [2]], [3, 4]]", "only numbers"),
    ("c.json", b"[]", "empty"),
    ("c.json", b"[[], []]", "empty"),
    ("c.json", b"[1, 2, 3]", "must be a 2-D"),
    ("c.json", b'{"centres": [[1]]}', 'needs a "centers" key'),
    ("c.json", b'{"centers": "[[1]]"}', "must be a list"),
    ("c.json", b'{"centers": [[1], [2]], "weights": [1]}', "one weight per centre (2)"),
    ("c.json", b'{"centers": [[1], [2]], "weights": [1, -1]}', "finite and >= 0"),
    ("c.json", b"{not json", "not valid JSON"),
    ("c.csv", b"1,2\n3\n", "ragged"),
    ("c.csv", b"a,b\n1,2\nx,4\n", "row 2: 'x' is not a number"),
    ("c.csv", b"1,2\nnan,4\n", "NaN or infinity"),
    ("c.csv", b"a,b\n", "empty"),
    ("c.csv", b"\xff\xfe1,2", "not UTF-8"),
    ("c.pkl", pickle.dumps([[1.0]]), "unknown extension '.pkl'"),
    ("c.txt", b"1 2", "unknown extension '.txt'"),
    ("centers", b"[[1]]", "unknown extension '(none)'"),
]


@pytest.mark.parametrize(
    "name, content, words", BAD_FILES, ids=[f"{n}-{w}" for n, _, w in BAD_FILES]
)
def test_bad_files_are_refused_with_a_message_naming_the_problem(tmp_path, name, content, words):
    path = _write(tmp_path / name, content)
    with pytest.raises(ModelFileError) as info:
        read_centers(path)
    assert words in str(info.value)
    assert str(info.value).startswith(path)


def test_a_missing_file_is_refused_with_a_message(tmp_path):
    with pytest.raises(ModelFileError, match="cannot read"):
        read_centers(tmp_path / "absent.npy")


def test_export_refuses_formats_it_does_not_write(tmp_path):
    with pytest.raises(ModelFileError, match=r"export writes \.npy or \.json"):
        write_centers(tmp_path / "c.csv", np.zeros((1, 1)))
