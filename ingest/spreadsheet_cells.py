"""Cells of a CSV file that people open in a spreadsheet: text that cannot run as a formula.

DICOM values come from whoever sent the data, and a CSV of them (`collect-metadata`) is
opened in Excel, LibreOffice or Google Sheets, which run a cell starting with `=`, `+`,
`-` or `@` as a formula (`=HYPERLINK(…)`, DDE `=cmd|…`). As OWASP's "CSV Injection" and
ASVS 1.2.10 recommend, such text gets a leading single quote (shown by spreadsheets as
text, not evaluated), and every text field is quoted (`csv.QUOTE_NONNUMERIC`), so a
separator or line break inside a value cannot start a new cell.

Numbers stay numbers: values of numeric VRs are ints and floats in the index (never text
from the sender), so `-5` is written as the number -5, not as `'-5`. Text that merely looks
like a number (a `-5` in a LO attribute) is escaped like any other text: it came from the
sender.
"""

from __future__ import annotations

import csv
import json
from typing import Any

# What makes a spreadsheet read a cell as a formula (OWASP), and NUL (ASVS 1.2.10); LF as CR.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n", "\0")
QUOTING = csv.QUOTE_NONNUMERIC


def inert_text(text: str) -> str:
    """Text a spreadsheet shows as it is: a leading single quote when it would start a formula."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def spreadsheet_cell(value: Any) -> str | int | float:
    """One CSV cell of an index value: numbers as numbers, everything else as inert text.

    Lists (multi-valued attributes, tags, datasets) are joined with `;`; a list of numbers
    is left as it is (digits, signs and `;` are no formula), a list with text has each item
    made inert, so no item can be lifted out into a cell of its own.
    """
    if value is None:
        return ""
    if _is_number(value):
        return value
    if isinstance(value, (list, tuple)):
        if all(_is_number(item) for item in value):
            return ";".join(str(item) for item in value)
        return inert_text(";".join(inert_text(str(item)) for item in value))
    if isinstance(value, dict):
        return inert_text(json.dumps(value))
    return inert_text(str(value))
