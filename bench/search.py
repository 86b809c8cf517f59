"""Search benchmark: 1 million synthetic image rows in PostgreSQL, p50/p95 of the common queries.

    python bench/search.py [--server postgresql://postgres@127.0.0.1:5432/postgres] [--rows N]

Creates a database of its own (dropped at the end unless --keep), applies the migrations, fills
it with generate_series on the server, then times `search_images` (count + first page, as the
API does) for a member of one project and for an admin. Target: p95 under 50 ms per query.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from allmicro_data.access import Caller
from allmicro_data.catalogue.db import create_catalogue_engine, make_session_factory, upgrade
from allmicro_data.search import ImageQuery, search_images

PROJECTS = 40
DATASETS_PER_PROJECT = 25
WORDS = ["tungsten", "lamella", "catalyst", "grain", "boundary", "pollen", "diatom", "steel"]

FILL = """
INSERT INTO organisation (id, name, kind, created_at)
    VALUES ('org', 'Bench Lab', 'partner', now());
INSERT INTO user_account (id, email, display_name, organisation_id, is_admin, is_active,
        failed_logins, created_at)
    VALUES ('member', 'member@bench', 'member', 'org', false, true, 0, now()),
           ('admin', 'admin@bench', 'admin', 'org', true, true, 0, now());
INSERT INTO project (id, name, kind, description, created_at)
    SELECT 'p' || p, 'project ' || p, 'research', '', now() FROM generate_series(1, :projects) p;
INSERT INTO project_membership (id, project_id, user_id, role, created_at)
    VALUES ('m1', 'p1', 'member', 'viewer', now());
INSERT INTO dataset (id, project_id, name, description, created_at)
    SELECT 'd' || d, 'p' || (1 + d % :projects), 'dataset ' || d, '', now()
    FROM generate_series(1, :datasets) d;
INSERT INTO image (id, dataset_id, name, series_index, status, modality, vendor, instrument,
        acquired_at, pixel_size_x, pixel_size_y, search_text, created_at, updated_at)
    SELECT md5(i::text)::uuid::text,
           -- Images arrive in upload sessions of 100 (an instrument PC emptying its folder),
           -- each session into a dataset picked at random, so datasets interleave on disk.
           'd' || (1 + (i / 100 * 2246822519) % 4294967291 % :datasets),
           'img-' || i || '.tif',
           0,
           CASE WHEN i % 50 = 0 THEN 'processing' ELSE 'ready' END,
           -- Attributes from independent multiplicative hashes of i, so that no two correlate
           -- with each other or with the dataset.
           (ARRAY['SEM', 'TEM', 'optical', 'FIB-SEM'])[1 + (i * 2654435761) % 4294967291 % 4],
           (ARRAY['Thermo Fisher', 'JEOL', 'Zeiss', 'Tescan', 'Hitachi'])
               [1 + (i * 40503) % 65521 % 5],
           'instrument ' || ((i * 69069) % 1000003 % 30),
           timestamptz '2020-01-01' + ((i * 16807) % 2147483647 % 189216000) * interval '1 s',
           -- Pixel sizes log-uniform from 0.1 nm to 10 µm.
           1e-10 * power(10, 5 * ((i * 48271) % 2147483647) / 2147483647.0),
           1e-10 * power(10, 5 * ((i * 48271) % 2147483647) / 2147483647.0),
           lower('img-' || i || '.tif '
                 || (ARRAY[{words}])[1 + (i * 1103515245) % 2147483647 % 8] || ' '
                 || (ARRAY[{words}])[1 + (i * 69069) % 1000003 % 8] || ' sample-'
                 || ((i * 48271) % 2147483629 % 5000) || ' operator-' || (i * 7919 % 40)),
           now(), now()
    FROM generate_series(1::bigint, :rows) i;
"""


def fill(engine: Engine, rows: int) -> None:
    words = ", ".join(f"'{w}'" for w in WORDS)
    sizes = {"projects": PROJECTS, "datasets": PROJECTS * DATASETS_PER_PROJECT, "rows": rows}
    with engine.begin() as conn:
        for statement in FILL.replace("{words}", words).split(";\n"):
            if statement.strip():
                conn.execute(text(statement), sizes)
    # What autovacuum does on a running server: statistics and the visibility map.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))


def timed(run: Callable[[], object], repeats: int) -> tuple[float, float]:
    run()  # warm the cache: the figures are for a running server
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(0.95 * (len(samples) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--keep", action="store_true", help="Keep the database afterwards.")
    parser.add_argument("--reuse", metavar="NAME", help="Time a database kept by --keep.")
    args = parser.parse_args()

    server = make_url(args.server).set(drivername="postgresql+psycopg")
    name = args.reuse or f"allmicro_bench_search_{secrets.token_hex(3)}"
    admin_engine = create_engine(server, isolation_level="AUTOCOMMIT")
    if not args.reuse:
        with admin_engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        engine = create_catalogue_engine(url)
        if not args.reuse:
            started = time.perf_counter()
            fill(engine, args.rows)
            print(f"{args.rows} images in {time.perf_counter() - started:.0f} s")
        sessions = make_session_factory(engine)
        member = Caller(user_id="member", organisation_id="org", email="member@bench")
        admin = Caller(user_id="admin", organisation_id="org", email="admin@bench", is_admin=True)
        year_2022 = {
            "acquired_from": datetime(2022, 1, 1, tzinfo=UTC),
            "acquired_to": datetime(2022, 12, 31, tzinfo=UTC),
        }
        # The member belongs to one project (25 datasets, 25 000 images); the admin sees all.
        queries = {
            "project + modality + date range": ImageQuery(
                project_id="p1", modality="sem", sort="-acquired_at", limit=50, **year_2022
            ),
            "modality + date range": ImageQuery(
                modality="sem", sort="-acquired_at", limit=50, **year_2022
            ),
            "free text, one word": ImageQuery(text="lamella", limit=50),
            "free text, two words": ImageQuery(text="tungsten sample-42", limit=50),
            "pixel-size range": ImageQuery(
                pixel_size_min=1e-9, pixel_size_max=5e-8, sort="pixel_size", limit=50
            ),
            "one dataset by name": ImageQuery(dataset_id="d40", limit=50),
        }
        print(f"{'query':<34} {'caller':<7} {'matches':>8} {'p50 ms':>8} {'p95 ms':>8}")
        worst = 0.0
        for label, query in queries.items():
            for who, caller in (("member", member), ("admin", admin)):

                def run(caller: Caller = caller, query: ImageQuery = query) -> str:
                    with sessions() as session:
                        found = search_images(session, caller, query)
                        return f"{found.total}{'' if found.total_exact else '+'}"

                matches = run()
                p50, p95 = timed(run, args.repeats)
                worst = max(worst, p95)
                flag = "" if p95 < 50 else "  over 50 ms"
                print(f"{label:<34} {who:<7} {matches:>8} {p50:>8.1f} {p95:>8.1f}{flag}")
        print(f"worst p95: {worst:.1f} ms (target 50 ms)")
        engine.dispose()
    finally:
        if not args.keep and not args.reuse:
            with admin_engine.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin_engine.dispose()


if __name__ == "__main__":
    main()
