"""The postgresql:// registry URL: libpq's part for psycopg, bake's parameters apart, no
password anywhere (the server itself is tested in tests/integration/test_pgstore.py)."""

from __future__ import annotations

import pytest

from bake.errors import RegistryError
from bake.registry.backend import open_registry
from bake.registry.pgstore import PgLocation, PgRegistry


def test_bakes_parameters_are_taken_out_of_the_conninfo() -> None:
    loc = PgLocation.parse(
        "postgresql://bake@db.internal:5433/reg?sslmode=require&repo=team-a&images=oci://r:5000/team"
    )
    assert loc.conninfo == "postgresql://bake@db.internal:5433/reg?sslmode=require"
    assert loc.repo == "team-a" and loc.images == "oci://r:5000/team"
    assert loc.url.startswith("postgresql://bake@db.internal:5433/reg?") and "images=" in loc.url


def test_a_unix_socket_url_keeps_its_empty_host() -> None:
    loc = PgLocation.parse("postgresql:///postgres?host=/tmp/pg&user=postgres")
    assert loc.conninfo == "postgresql:///postgres?host=%2Ftmp%2Fpg&user=postgres"
    assert loc.repo == "bake" and loc.images is None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://bake:hunter2@db/reg", "carries a password"),
        ("postgresql://db/reg?repo=../x", "repo="),
        ("postgresql://db/reg?images=dir:/x", "images="),
    ],
)
def test_bad_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(RegistryError, match=message) as e:
        PgLocation.parse(url)
    assert "hunter2" not in str(e.value)


def test_the_scheme_picks_the_backend_without_connecting() -> None:
    assert isinstance(open_registry("postgresql://db.invalid/reg"), PgRegistry)
    assert isinstance(open_registry("postgres://db.invalid/reg"), PgRegistry)
