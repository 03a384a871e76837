"""Move invoice PDFs stored by earlier versions under MEDIA_ROOT/invoices/ (served at
/media/ in development) to the private storage, under the same names, so the invoices'
``pdf`` values stay as they are. Every file there moves, also the originals of voided
invoices that no row points to any more. A file already in private storage is kept and
the public copy removed. The reverse moves them back.
"""

from django.core.files.storage import default_storage, storages
from django.db import migrations

FOLDER = "invoices"


def _files(storage, folder):
    if not storage.exists(folder):
        return
    folders, files = storage.listdir(folder)
    for name in files:
        yield f"{folder}/{name}"
    for sub in folders:
        yield from _files(storage, f"{folder}/{sub}")


def _move(source, target):
    for name in list(_files(source, FOLDER)):
        if not target.exists(name):
            with source.open(name, "rb") as handle:
                stored = target.save(name, handle)
            assert stored == name, (stored, name)
        source.delete(name)


def move_to_private(apps, schema_editor):
    _move(default_storage, storages["invoices"])


def move_to_media(apps, schema_editor):
    _move(storages["invoices"], default_storage)


class Migration(migrations.Migration):
    dependencies = [("billing", "0005_invoice_pdf_private_storage")]

    operations = [migrations.RunPython(move_to_private, move_to_media, elidable=True)]
