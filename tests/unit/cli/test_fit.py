"""Tables that fit the terminal: columns dropped in the stated order, then the widest cut; pipes keep all."""

from __future__ import annotations

import pytest

from multibake.cli import fit, report

HEADERS = ["TARGET", "PLATFORMS", "STATUS", "TIME", "INDEX", "PLATFORM DIGESTS", "TAGS", "BASE"]
ROW = [
    "alpine-s6-nodejs-3_23-3_2_3_2-24",
    "amd64,arm64,armv7",
    "published",
    "61.2s",
    "0123456789ab",
    "amd64=0123456789ab arm64=0123456789ab armv7=0123456789ab",
    "24-alpine3.23,24",
    "localhost:5000/multibake/alpine-s6-overlay:3.23-3.2.3.2",
]


def test_a_170_column_summary_fits_160_by_dropping_the_digests_first() -> None:
    full = fit.total(fit.widths(HEADERS, [ROW]))
    assert full > 160
    heads, rows, dropped = fit.fit(HEADERS, [ROW], 160, report.BUILD_DROPS)
    assert dropped == ["PLATFORM DIGESTS"] and "BASE" in heads
    assert fit.total(fit.widths(heads, rows)) <= 160
    assert rows[0][-1] == ROW[-1], "the base is whole"


def test_narrower_terminals_drop_more_then_cut_the_widest() -> None:
    heads, rows, dropped = fit.fit(HEADERS, [ROW], 80, report.BUILD_DROPS)
    assert dropped == ["PLATFORM DIGESTS", "INDEX", "BASE", "TIME"]
    assert fit.total(fit.widths(heads, rows)) <= 80
    heads, rows, _ = fit.fit(HEADERS, [ROW], 50, report.BUILD_DROPS)
    assert fit.total(fit.widths(heads, rows)) <= 50 and any(v.endswith("…") for v in rows[0])


def test_no_width_keeps_everything() -> None:
    assert fit.fit(HEADERS, [ROW], None, report.BUILD_DROPS) == (HEADERS, [ROW], [])


def test_the_width_comes_from_columns_else_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    assert fit.terminal_width({"COLUMNS": "160"}) == 160
    monkeypatch.setattr("sys.stdout.isatty", lambda: False)
    assert fit.terminal_width({}) is None, "piped output is not cut"


def test_report_table_says_what_it_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "160")
    text = report.table(HEADERS, [ROW], drop=report.BUILD_DROPS)
    assert all(len(line) <= 160 for line in text.splitlines())
    assert "(PLATFORM DIGESTS left out to fit the terminal; --json has every column)" in text
    monkeypatch.delenv("COLUMNS")
    monkeypatch.setattr("sys.stdout.isatty", lambda: False)
    assert "PLATFORM DIGESTS" in report.table(HEADERS, [ROW], drop=report.BUILD_DROPS)
