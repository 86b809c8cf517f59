"""CSV meant for spreadsheets: text that a spreadsheet would run as a formula is kept as text."""

from __future__ import annotations

from collections.abc import Iterable

# A cell starting with one of these is a formula (or becomes one) in Excel, LibreOffice and
# Google Sheets: "=HYPERLINK(…)" in a file name or a typed-in user name would run on opening.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_cell(value: object) -> object:
    """The value as a CSV cell: text that a spreadsheet would read as a formula gets a leading
    apostrophe (OWASP's advice), so it shows as the text it is. Numbers are left alone: -3.5
    is a number, not an attack, and no user types it."""
    if isinstance(value, str) and value.startswith(FORMULA_TRIGGERS):
        return "'" + value
    return value


def annotation_cell(items: Iterable[str]) -> str:
    """Tags, or `key=value` pairs, in one cell: separated by "; ", a literal ";" doubled, so
    that a spreadsheet user can split the cell and a program can split it back exactly."""
    return "; ".join(item.replace(";", ";;") for item in items)


def spreadsheet_row(values: Iterable[object]) -> list[object]:
    """A whole row through spreadsheet_cell, for csv.writer.writerow."""
    return [spreadsheet_cell(value) for value in values]
