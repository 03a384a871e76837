"""An event's client, project and rate must exist, and cannot be deleted under it.

On PostgreSQL these are triggers (tracking 0008: one check per insert statement, not
per row), so they are tested as a foreign key would be: each missing parent refused,
each referenced parent kept, and both orders of an insert racing a delete. SQLite keeps
its foreign keys, which Django's PROTECT answers before anyway.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

import psycopg
import pytest
from django.db import IntegrityError, connection, transaction

from agency.models import Client, Project
from tests.clock import AGENCY_TZ
from tests.factories import ClientFactory, ProjectFactory, UsageEventFactory
from tracking.models import ModelRate, UsageEvent

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the triggers are PostgreSQL's"),
]

WHEN = datetime(2026, 11, 20, 10, tzinfo=AGENCY_TZ)
MISSING = 987_654_321


def _event(**fields: Any) -> UsageEvent:
    return cast(UsageEvent, UsageEventFactory.build(occurred_at=WHEN, **fields))


def _raw() -> psycopg.Connection[Any]:
    """A second session on the test database, outside Django's connection."""
    settings = connection.settings_dict
    return psycopg.connect(
        dbname=settings["NAME"],
        user=settings["USER"],
        password=settings["PASSWORD"] or None,
        host=settings["HOST"] or None,
        port=settings["PORT"] or None,
    )


@pytest.mark.parametrize(
    ("field", "named"),
    [("client_id", "client"), ("project_id", "project"), ("rate_id", "model rate")],
)
def test_an_insert_naming_a_missing_parent_fails_and_stores_nothing(rates, field, named):
    acme = cast(Client, ClientFactory())
    good = [_event(client=acme) for _ in range(3)]
    bad = _event(client=acme)
    setattr(bad, field, MISSING)

    refused = pytest.raises(IntegrityError, match=f"refers to {named} {MISSING} that does not")
    with refused, transaction.atomic():
        UsageEvent.objects.bulk_create([*good, bad])

    assert not UsageEvent.objects.exists()
    UsageEvent.objects.bulk_create(good)  # the same rows without the bad one are fine
    assert UsageEvent.objects.count() == 3


def test_an_insert_whose_parents_exist_is_stored(rates):
    acme = cast(Client, ClientFactory())
    project = cast(Project, ProjectFactory(client=acme))
    rate = ModelRate.objects.first()
    UsageEvent.objects.bulk_create(
        [_event(client=acme, project=project, rate=rate), _event(client=acme)]
    )
    assert UsageEvent.objects.filter(project=project, rate=rate).count() == 1


@pytest.mark.parametrize("field", ["client_id", "project_id", "rate_id"])
def test_an_update_to_a_missing_parent_fails(rates, field):
    acme = cast(Client, ClientFactory())
    event = cast(UsageEvent, UsageEventFactory(client=acme, occurred_at=WHEN))

    with pytest.raises(IntegrityError, match="that does not exist"), transaction.atomic():
        UsageEvent.objects.filter(pk=event.pk).update(**{field: MISSING})

    # To a parent that exists, and back to none where none is allowed: fine.
    other = cast(Client, ClientFactory())
    updates = {
        "client_id": other.pk,
        "project_id": cast(Project, ProjectFactory(client=acme)).pk,
        "rate_id": cast(ModelRate, ModelRate.objects.first()).pk,
    }
    UsageEvent.objects.filter(pk=event.pk).update(**{field: updates[field]})
    assert UsageEvent.objects.filter(**{"pk": event.pk, field: updates[field]}).exists()


def test_a_referenced_parent_cannot_be_deleted_or_renumbered_even_in_raw_sql(rates):
    acme = cast(Client, ClientFactory())
    project = cast(Project, ProjectFactory(client=acme))
    rate = cast(ModelRate, ModelRate.objects.first())
    UsageEventFactory(client=acme, project=project, rate=rate, occurred_at=WHEN)

    for table, pk in [
        ("tracking_modelrate", rate.pk),
        ("agency_project", project.pk),
        ("agency_client", acme.pk),
    ]:
        for statement in (
            f"DELETE FROM {table} WHERE id = %s",
            f"UPDATE {table} SET id = {MISSING} WHERE id = %s",
        ):
            refused = pytest.raises(IntegrityError, match=f"{table} {pk} is still referred to")
            with refused, transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(statement, [pk])

    assert UsageEvent.objects.filter(client=acme, project=project, rate=rate).count() == 1
    # An unreferenced one goes, and so does a referenced one once its events are gone.
    cast(Project, ProjectFactory(client=acme)).delete()
    UsageEvent.objects.filter(client=acme).delete()
    project.delete()
    assert not Project.objects.filter(client=acme).exists()


def _wait_until_blocked(pid: int | None = None) -> None:
    """Until the session ``pid`` (or any other session on this database) waits for a
    lock; fails after 10 s."""
    deadline = time.monotonic() + 10
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database() AND pid <> pg_backend_pid() "
                "AND (%s::int IS NULL OR pid = %s::int)",
                [pid, pid],
            )
            if cursor.fetchone():
                return
            time.sleep(0.02)
    raise AssertionError("no session waited for a lock")


def _in_thread(work: Callable[[], None]) -> tuple[threading.Thread, list[BaseException]]:
    failures: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:
            failures.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, failures


def test_a_delete_racing_an_insert_in_flight_waits_and_then_fails(rates):
    """The insert locked its client first: the delete waits for its commit, then sees
    the new event."""
    acme = cast(Client, ClientFactory())
    with _raw() as deleter:
        pid = deleter.info.backend_pid
        with transaction.atomic():
            UsageEventFactory(client=acme, occurred_at=WHEN)

            def delete() -> None:
                deleter.execute("DELETE FROM agency_client WHERE id = %s", [acme.pk])

            thread, failures = _in_thread(delete)
            _wait_until_blocked(pid)
        thread.join(10)
        deleter.rollback()

    assert [type(f) for f in failures] == [psycopg.errors.ForeignKeyViolation]
    assert UsageEvent.objects.filter(client=acme).count() == 1


def test_an_insert_racing_a_delete_in_flight_waits_and_then_fails(rates):
    """The delete went first: the insert waits for its commit, then finds no client."""
    acme = cast(Client, ClientFactory())
    with _raw() as deleter:
        deleter.execute("DELETE FROM agency_client WHERE id = %s", [acme.pk])

        def insert() -> None:
            UsageEvent.objects.bulk_create([_event(client_id=acme.pk)])

        thread, failures = _in_thread(insert)
        _wait_until_blocked()  # the insert's session, the only other one
        deleter.commit()
        thread.join(10)

    assert len(failures) == 1 and isinstance(failures[0], IntegrityError)
    assert f"client {acme.pk} that does not exist" in str(failures[0])
    assert not UsageEvent.objects.exists()
    assert not Client.objects.filter(pk=acme.pk).exists()
