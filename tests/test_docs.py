"""The README's configuration table says what Settings really accepts."""

import dataclasses
import re
from pathlib import Path

import pytest

from stream.config import Settings, env_name, flag_name

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
ROWS = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(--[a-z-]+)` \| .*$", README, re.M)}


@pytest.mark.parametrize("field", dataclasses.fields(Settings), ids=lambda f: f.name)
def test_every_serve_option_is_in_the_readme_with_its_variable_and_default(field):
    row = ROWS.get(flag_name(field))
    assert row is not None, f"README lacks a row for {flag_name(field)}"
    assert f"`{env_name(field)}`" in row
    if field.default is None:
        assert "(none)" in row or "<input-topic>" in row
    else:
        default = (
            str(field.default).lower() if isinstance(field.default, bool) else str(field.default)
        )
        assert f"`{default}`" in row


def test_the_readme_documents_no_option_that_does_not_exist():
    known = {flag_name(f) for f in dataclasses.fields(Settings)}
    assert set(ROWS) - known == set()


def test_the_readme_starts_with_the_two_commands():
    first_block = README.split("```sh", 1)[1].split("```", 1)[0]
    assert [line.split()[0:2] for line in first_block.strip().splitlines()] == [
        ["make", "demo"],
        ["make", "test"],
    ]
