"""CSV cells for spreadsheets: every formula trigger becomes text; numbers and plain text stay."""

from __future__ import annotations

import csv
import io

import pytest

from allmicro_data.csv_export import spreadsheet_cell, spreadsheet_row


@pytest.mark.parametrize("text", ["=1+2", "+1", "-1+cmd", "@SUM(A1)", "\t=1", "\r=1"])
def test_text_a_spreadsheet_would_run_is_written_as_text(text: str) -> None:
    assert spreadsheet_cell(text) == "'" + text


def test_numbers_and_plain_text_are_left_alone() -> None:
    row = spreadsheet_row([-3.5, 0, True, None, "", "Helios 5 UX", "a=b", "1e-9"])
    assert row == [-3.5, 0, True, None, "", "Helios 5 UX", "a=b", "1e-9"]
    out = io.StringIO()
    csv.writer(out).writerow(spreadsheet_row(["-2", -2]))
    assert out.getvalue() == "'-2,-2\r\n"
