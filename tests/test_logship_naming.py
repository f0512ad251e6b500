"""logship/naming.py: which files are rotated, blob names, retention (no I/O)."""

from __future__ import annotations

import datetime as dt

from logship.naming import (
    RotatedFile,
    blob_name,
    conflict_blob_name,
    expired,
    rotated_day,
    upload_order,
)
from settings.logs import rotated_name


def test_the_file_handlers_rotated_names_are_recognised():
    ours = rotated_name("/logs/web.log.2026-11-22")
    assert ours.endswith("web.2026-11-22.log")
    assert rotated_day("web.2026-11-22.log") == dt.date(2026, 11, 22)
    # The standard library's naming, as the older services left their files.
    assert rotated_day("web.log.2026-11-21") == dt.date(2026, 11, 21)
    assert rotated_day("web.log.2026-11-21_13-05") == dt.date(2026, 11, 21)


def test_active_files_and_other_files_are_not_rotated():
    for name in (
        "web.log",
        "conduit.log",
        ".logship-state.json",
        "notes.txt",
        "web.2026-13-40.log",
    ):
        assert rotated_day(name) is None, name


def test_oldest_day_goes_first():
    files = [
        RotatedFile("b.2026-11-03.log", dt.date(2026, 11, 3), mtime=1.0, size=1),
        RotatedFile("a.2026-11-01.log", dt.date(2026, 11, 1), mtime=9.0, size=1),
        RotatedFile("a.2026-11-02.log", dt.date(2026, 11, 2), mtime=5.0, size=1),
    ]
    assert [f.name for f in upload_order(files)] == [
        "a.2026-11-01.log",
        "a.2026-11-02.log",
        "b.2026-11-03.log",
    ]


def test_blob_names_are_app_host_file_with_safe_segments():
    assert blob_name("web", "host-1", "web.2026-11-22.log") == "web/host-1/web.2026-11-22.log"
    assert blob_name("my app/x", "", "f.log.2026-11-22") == "my-app-x/unnamed/f.log.2026-11-22"


def test_a_conflicting_name_gets_the_content_hash():
    assert (
        conflict_blob_name("web/h/web.2026-11-22.log", "0123456789abcdef")
        == "web/h/web.2026-11-22.0123456789ab.log"
    )


def test_retention_keeps_that_many_full_days():
    today = dt.date(2026, 11, 30)
    assert not expired(dt.date(2026, 11, 20), today, retention_days=10)
    assert expired(dt.date(2026, 11, 19), today, retention_days=10)
