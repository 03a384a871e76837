"""Invoices print PAID with the day the payment was received (``paid_on``), the client's
note (reverse charge, VAT) and, per client, the pricing details or amounts per line only.

PostgreSQL: 0007's trigger freezes every column of an issued invoice, these new ones
included, except what a status move sets. Marking paid now also sets ``paid_on`` and
stores the PAID copy of the PDF (``pdf``, ``pdf_sha256``; the original file is kept), as
voiding does with the VOID copy. Only that one line of the trigger function changes.
"""

import importlib

from django.db import migrations, models

_0007 = importlib.import_module("billing.migrations.0007_invoice_frozen_everything")
_START = "CREATE OR REPLACE FUNCTION billing_invoice_frozen()"
_END = "END $$ LANGUAGE plpgsql;"
OLD_FUNCTION = _0007.FORWARD[_0007.FORWARD.index(_START) :]
OLD_FUNCTION = OLD_FUNCTION[: OLD_FUNCTION.index(_END) + len(_END)]
OLD_PAID = "THEN ARRAY['status', 'paid_at']"
NEW_PAID = "THEN ARRAY['status', 'paid_at', 'paid_on', 'pdf', 'pdf_sha256']"
assert OLD_FUNCTION.count(OLD_PAID) == 1
NEW_FUNCTION = OLD_FUNCTION.replace(OLD_PAID, NEW_PAID)


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(NEW_FUNCTION, params=None)


def reverse(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(OLD_FUNCTION, params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0009_record_past_month_end_runs"),
    ]

    operations = [
        migrations.AddField(
            model_name="invoice",
            name="invoice_note",
            field=models.TextField(blank=True, help_text="The client's note, e.g. reverse charge."),
        ),
        migrations.AddField(
            model_name="invoice",
            name="paid_on",
            field=models.DateField(
                blank=True, help_text="The day the payment was received, as printed.", null=True
            ),
        ),
        migrations.AddField(
            model_name="invoice",
            name="show_pricing_details",
            field=models.BooleanField(
                default=False,
                help_text="Tokens, unit prices and unpriced calls printed; off: amounts per line only.",
            ),
        ),
        migrations.AlterField(
            model_name="invoice",
            name="show_markup",
            field=models.BooleanField(
                default=False,
                help_text="Cost and markup columns: the client's choice, with details on.",
            ),
        ),
        migrations.RunPython(forward, reverse),
    ]
