"""Backups as data: ids are times, retention keeps what it says (and always the newest),
manifests survive their JSON line."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.backup.model import Manifest, parse_listing, to_prune
from orchestrator.render.backups import id_time, new_id, parse_span, show_span

DAY = 86400.0
NOW = id_time("20261210T000000Z")


def ids(*days: int) -> list[str]:
    """Backups taken `days` days before NOW."""
    return [new_id(NOW - d * DAY) for d in days]


def test_ids_are_utc_times_and_sort_by_time() -> None:
    assert new_id(0) == "19700101T000000Z" and id_time("19700101T000000Z") == 0
    assert sorted(ids(3, 1, 2)) == ids(3, 2, 1)


def test_keep_a_count_deletes_the_oldest() -> None:
    assert to_prune(ids(0, 1, 2, 3, 4), keep=3, keep_for=None, now=NOW) == sorted(ids(3, 4))


def test_keep_an_age_deletes_the_old_ones() -> None:
    assert to_prune(ids(0, 1, 8, 9), keep=None, keep_for=7 * DAY, now=NOW) == sorted(ids(8, 9))


def test_both_limits_apply() -> None:
    assert to_prune(ids(0, 1, 2, 8), keep=3, keep_for=7 * DAY, now=NOW) == ids(8)
    assert to_prune(ids(0, 1, 2, 3), keep=2, keep_for=30 * DAY, now=NOW) == sorted(ids(2, 3))


def test_the_newest_is_kept_even_when_it_is_too_old() -> None:
    assert to_prune(ids(40, 50), keep=None, keep_for=7 * DAY, now=NOW) == ids(50)


@settings(max_examples=50, deadline=1000)
@given(st.sets(st.integers(0, 400), min_size=1, max_size=30), st.one_of(st.none(), st.integers(1, 10)),
       st.one_of(st.none(), st.integers(1, 60)))
def test_retention_never_deletes_the_newest_and_keeps_within_its_limits(days: set[int], keep: int | None,
                                                                         keep_days: int | None) -> None:
    every = ids(*days)
    doomed = set(to_prune(every, keep=keep, keep_for=keep_days * DAY if keep_days else None, now=NOW))
    kept = sorted(set(every) - doomed)
    assert max(every) in kept
    if keep is not None:
        assert len(kept) <= keep
    if keep_days is not None:
        assert all(NOW - id_time(i) <= keep_days * DAY for i in kept[:-1])


@pytest.mark.parametrize(("text", "seconds"), [("26h", 93600), ("7d", 604800), ("1d12h", 129600), ("90m", 5400)])
def test_spans(text: str, seconds: float) -> None:
    assert parse_span(text) == seconds
    assert parse_span(show_span(seconds)) == seconds


@pytest.mark.parametrize("bad", ["", "7", "d", "1w", "7d x", "-1d", "1.5h"])
def test_bad_spans(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_span(bad)


def test_a_manifest_survives_its_line_and_a_broken_one_is_none() -> None:
    manifest = Manifest(service="vault", node="oracle", method="vault-file", id="20261201T010000Z",
                        created=1.5, duration_s=0.25, size=10, checksum="ab" * 32,
                        files={"storage.tar": {"size": 10, "sha256": "cd" * 32}}, version="0.1.0",
                        contains_secrets=True)
    line = manifest.to_json()
    assert "\n" not in line and Manifest.from_json(line) == manifest
    assert Manifest.from_json('{"service": 1') is None and Manifest.from_json("[]") is None


def test_a_listing_line_without_a_manifest_is_kept_as_unreadable() -> None:
    listing = parse_listing("now 1800000000\npostgres\t20261201T010000Z\t\nredis\tnot-an-id\t{}\n")
    assert listing.now == 1800000000 and listing.of("redis") == ()
    only = listing.newest("postgres")
    assert only is not None and only.manifest is None and only.created == id_time("20261201T010000Z")
