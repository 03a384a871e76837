"""Invoice PDFs are private files (issue 10, item 8): stored outside MEDIA_ROOT where no
URL reaches them, served only by the permission-checked views, never cached by a shared
proxy. Files stored under MEDIA_ROOT by earlier versions are moved by a data migration."""

from __future__ import annotations

import importlib
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.apps import apps as global_apps
from django.conf import settings as django_settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage, storages
from django.urls import clear_url_caches, reverse

from agency.models import Client
from billing.models import Invoice
from billing.services.invoices import invoice_finalize, invoice_void, invoices_generate_month
from tests.factories import (
    ClientFactory,
    ClientMembershipFactory,
    StaffFactory,
    UserFactory,
    priced_event,
)

pytestmark = pytest.mark.django_db

OCT = date(2026, 10, 1)


def at(month: int, day: int, hour: int = 12) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


@pytest.fixture(autouse=True)
def private_root(tmp_path: Path, settings: Any) -> Path:
    """A private storage of this test's own: invoice numbers restart in every test."""
    settings.PRIVATE_STORAGE_ROOT = tmp_path / "private"
    return settings.PRIVATE_STORAGE_ROOT


@pytest.fixture
def acme(rates, time_machine) -> Client:
    time_machine.move_to(at(9, 20), tick=False)
    client: Client = ClientFactory.create(slug="acme", markup_pct=Decimal("25"))
    priced_event(client, at=at(10, 3))
    time_machine.move_to(at(11, 1, 2), tick=False)
    invoices_generate_month(month=OCT)
    return client


@pytest.fixture
def issued(acme) -> Invoice:
    return invoice_finalize(invoice_id=Invoice.objects.get(client=acme).pk)


def download_urls(invoice: Invoice) -> list[str]:
    kwargs = {"slug": "acme", "pk": invoice.pk}
    return [
        reverse("invoice_pdf", kwargs=kwargs),
        reverse("invoice_lines_csv", kwargs=kwargs),
        reverse("invoice_events_csv", kwargs=kwargs),
        reverse("usage_month_csv", kwargs={"slug": "acme", "month": "2026-10"}),
    ]


# --- where the file is ---------------------------------------------------------------------


def test_the_pdf_is_stored_outside_media_root(issued):
    name = issued.pdf.name
    assert name == f"invoices/2026/{issued.number}.pdf"
    private = Path(django_settings.PRIVATE_STORAGE_ROOT)
    assert (private / name).read_bytes().startswith(b"%PDF-")
    assert not (Path(django_settings.MEDIA_ROOT) / name).exists()
    media, static = Path(django_settings.MEDIA_ROOT), Path(django_settings.STATIC_ROOT)
    assert not private.resolve().is_relative_to(media.resolve())
    assert not private.resolve().is_relative_to(static.resolve())


def test_the_void_copy_is_private_too(issued):
    void = invoice_void(invoice_id=issued.pk, reason="wrong address")
    assert void.pdf.name == f"invoices/2026/{issued.number}-void.pdf"
    assert (Path(django_settings.PRIVATE_STORAGE_ROOT) / void.pdf.name).exists()
    assert not (Path(django_settings.MEDIA_ROOT) / void.pdf.name).exists()


def test_private_files_have_no_url(issued):
    with pytest.raises(ValueError, match="no URL"):
        issued.pdf.url  # noqa: B018


@pytest.fixture
def demo_urls(settings: Any) -> Any:
    """The URLs as the demo (DJANGO_DEBUG=1) builds them: MEDIA_ROOT served under /media/."""
    import agency.urls

    settings.DEBUG = True
    importlib.reload(agency.urls)
    clear_url_caches()
    yield
    settings.DEBUG = False
    importlib.reload(agency.urls)
    clear_url_caches()


def test_in_the_demo_media_is_served_but_no_invoice_is(issued, demo_urls, client):
    default_storage.save("agency/logo.txt", ContentFile(b"logo"))
    # The media route is live (so the 404s below mean something)...
    assert client.get("/media/agency/logo.txt").status_code == 200
    # ...and no invoice is reachable through it, signed in or not.
    client.force_login(StaffFactory.create())
    for path in (issued.pdf.name, f"../private/{issued.pdf.name}", f"private/{issued.pdf.name}"):
        assert client.get(f"/media/{path}").status_code in (400, 404), path


# --- the views ------------------------------------------------------------------------------


def assert_private_download(response: Any, filename: str) -> None:
    assert response.status_code == 200
    assert response["Content-Disposition"] == f'attachment; filename="{filename}"'
    cache_control = {part.strip() for part in response["Cache-Control"].split(",")}
    assert {"private", "no-store", "no-cache"} <= cache_control


def test_the_clients_user_downloads_their_issued_pdf_privately(issued, client):
    client.force_login(ClientMembershipFactory.create(client=issued.client).user)
    response = client.get(download_urls(issued)[0])
    assert_private_download(response, f"{issued.number}.pdf")
    assert b"".join(response.streaming_content) == issued.pdf.open("rb").read()


def test_staff_download_a_draft_privately(acme, client):
    draft = Invoice.objects.get(client=acme)
    client.force_login(StaffFactory.create())
    response = client.get(download_urls(draft)[0])
    assert_private_download(response, f"draft-{draft.pk}.pdf")
    assert response.content.startswith(b"%PDF-")


def test_every_download_is_an_uncached_attachment(issued, client):
    client.force_login(StaffFactory.create())
    names = [
        f"{issued.number}.pdf",
        f"{issued.number}-lines.csv",
        f"{issued.number}-events.csv",
        "acme-usage-2026-10.csv",
    ]
    for url, name in zip(download_urls(issued), names, strict=True):
        assert_private_download(client.get(url), name)


@pytest.mark.parametrize("who", ["anonymous", "outsider", "no client", "draft viewer"])
def test_each_url_refuses_whoever_may_not_see_the_invoice(acme, client, who):
    invoice = Invoice.objects.get(client=acme)  # a draft
    if who != "draft viewer":
        invoice = invoice_finalize(invoice_id=invoice.pk)
    if who == "outsider":
        client.force_login(ClientMembershipFactory.create(client=ClientFactory.create()).user)
    elif who == "no client":
        client.force_login(UserFactory.create())
    elif who == "draft viewer":  # Acme's own user, but drafts are staff-only
        client.force_login(ClientMembershipFactory.create(client=acme).user)
    for url in download_urls(invoice)[:3]:
        response = client.get(url)
        if who == "anonymous":
            assert response.status_code == 302 and "/accounts/login/" in response["Location"]
        else:
            assert response.status_code == 404, url


def test_admins_pdf_links_go_to_the_checked_view(issued, client):
    client.force_login(StaffFactory.create(is_superuser=True))
    view = reverse("invoice_pdf", kwargs={"slug": "acme", "pk": issued.pk})
    listing = client.get(reverse("admin:billing_invoice_changelist")).content.decode()
    change = client.get(reverse("admin:billing_invoice_change", args=[issued.pk]))
    assert change.status_code == 200
    page = change.content.decode()
    assert f'href="{view}"' in listing
    assert f'href="{view}"' in page
    assert issued.pdf.name in page
    assert "/media/" not in page


# --- files stored under MEDIA_ROOT before: moved by the data migration -----------------------


def _migration() -> Any:
    return importlib.import_module("billing.migrations.0006_move_invoice_pdfs_to_private_storage")


def test_the_data_migration_moves_every_stored_invoice_file(tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.PRIVATE_STORAGE_ROOT = tmp_path / "private"
    media, private = default_storage, storages["invoices"]
    media.save("invoices/2026/INV-2026-00001.pdf", ContentFile(b"%PDF-original"))
    media.save("invoices/2026/INV-2026-00001-void.pdf", ContentFile(b"%PDF-void"))
    media.save("agency/logo.png", ContentFile(b"png"))

    _migration().move_to_private(global_apps, None)

    assert private.open("invoices/2026/INV-2026-00001.pdf").read() == b"%PDF-original"
    assert private.open("invoices/2026/INV-2026-00001-void.pdf").read() == b"%PDF-void"
    assert not media.exists("invoices/2026/INV-2026-00001.pdf")
    assert not media.exists("invoices/2026/INV-2026-00001-void.pdf")
    assert media.exists("agency/logo.png")  # not an invoice: stays

    _migration().move_to_media(global_apps, None)  # the reverse
    assert media.open("invoices/2026/INV-2026-00001.pdf").read() == b"%PDF-original"
    assert not private.exists("invoices/2026/INV-2026-00001.pdf")


def test_the_data_migration_keeps_a_file_already_moved(tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.PRIVATE_STORAGE_ROOT = tmp_path / "private"
    media, private = default_storage, storages["invoices"]
    private.save("invoices/2026/INV-2026-00002.pdf", ContentFile(b"%PDF-kept"))
    media.save("invoices/2026/INV-2026-00002.pdf", ContentFile(b"%PDF-stale"))
    _migration().move_to_private(global_apps, None)
    assert private.open("invoices/2026/INV-2026-00002.pdf").read() == b"%PDF-kept"
    assert not media.exists("invoices/2026/INV-2026-00002.pdf")


# --- an archived month ------------------------------------------------------------------


def test_event_exports_of_an_archived_month_say_so_and_the_invoice_stays(issued, client):
    """Its raw events left the database (tracking.partitions): an empty CSV would read as
    "no usage", so the event exports answer 410; the invoice's own files are unchanged."""
    from tracking.models import ArchivedMonth

    ArchivedMonth.objects.create(month=OCT, archived_at=at(12, 2), events=1)
    pdf, lines, events, usage = download_urls(issued)
    for user in (StaffFactory.create(), ClientMembershipFactory.create(client=issued.client).user):
        client.force_login(user)
        assert client.get(pdf).status_code == 200
        assert client.get(lines).status_code == 200
        for url in (events, usage):
            response = client.get(url)
            assert response.status_code == 410
            assert "events of 2026-10 were archived" in response.content.decode()
    client.force_login(ClientMembershipFactory.create(client=ClientFactory.create()).user)
    assert [client.get(url).status_code for url in (pdf, lines, events, usage)] == [404] * 4
