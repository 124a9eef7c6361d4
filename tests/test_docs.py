"""The README's configuration tables say what Settings and ApiOptions really accept."""

import dataclasses
import re
from pathlib import Path

import pytest

from api.config import ApiOptions
from stream.config import KafkaOptions, Settings, env_name, flag_name

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def table_rows(section: str) -> dict[str, str]:
    """The option rows of the table in the README section `## {section}`."""
    text = README.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return {m.group(1): m.group(0) for m in re.finditer(r"^\| `(--[a-z-]+)` \| .*$", text, re.M)}


ROWS = table_rows("Configuration")
API_ROWS = table_rows("Score on request")
KAFKA = {f.name for f in dataclasses.fields(KafkaOptions)}
API_FIELDS = [f for f in dataclasses.fields(ApiOptions) if f.name not in KAFKA]


@pytest.mark.parametrize(
    ("rows", "field"),
    [(ROWS, f) for f in dataclasses.fields(Settings)] + [(API_ROWS, f) for f in API_FIELDS],
    ids=lambda x: x.name if isinstance(x, dataclasses.Field) else "",
)
def test_every_serve_and_api_option_is_in_the_readme_with_its_variable_and_default(rows, field):
    row = rows.get(flag_name(field))
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
    assert set(API_ROWS) - {flag_name(f) for f in API_FIELDS} == set()


def test_the_readme_starts_with_the_two_commands():
    first_block = README.split("```sh", 1)[1].split("```", 1)[0]
    assert [line.split()[0:2] for line in first_block.strip().splitlines()] == [
        ["make", "demo"],
        ["make", "test"],
    ]
