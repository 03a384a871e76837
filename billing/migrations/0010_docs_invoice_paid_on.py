"""Invoices print PAID with the day the payment was received (``paid_on``), the client's
note (reverse charge, VAT) and, per client, the pricing details or amounts per line only.

PostgreSQL: 0007's trigger freezes every column of an issued invoice, these new ones
included, except what a status move sets. Marking paid now also sets ``paid_on`` and
stores the PAID copy of the PDF (``pdf``, ``pdf_sha256``; the original file is kept), as
voiding does with the VOID copy. Only that one line of the trigger function changes.
"""

import importlib

import agency.db
import billing.models
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

        migrations.AlterField(
            model_name='alert',
            name='billed_usd',
            field=agency.db.CostField(decimal_places=15, default=0, max_digits=30, verbose_name='billed (USD)'),
        ),
        migrations.AlterField(
            model_name='alert',
            name='budget_usd',
            field=models.DecimalField(blank=True, decimal_places=2, max_digits=14, null=True, verbose_name='budget (USD)'),
        ),
        migrations.AlterField(
            model_name='alert',
            name='projected_billed_usd',
            field=agency.db.CostField(decimal_places=15, default=0, max_digits=30, verbose_name='projected billed (USD)'),
        ),
        migrations.AlterField(
            model_name='budgetsnapshot',
            name='billed_usd',
            field=agency.db.CostField(decimal_places=15, default=0, max_digits=30, verbose_name='billed (USD)'),
        ),
        migrations.AlterField(
            model_name='budgetsnapshot',
            name='budget_usd',
            field=models.DecimalField(blank=True, decimal_places=2, max_digits=14, null=True, verbose_name='budget (USD)'),
        ),
        migrations.AlterField(
            model_name='budgetsnapshot',
            name='cost_usd',
            field=agency.db.CostField(decimal_places=15, default=0, max_digits=30, verbose_name='cost (USD)'),
        ),
        migrations.AlterField(
            model_name='budgetsnapshot',
            name='projected_billed_usd',
            field=agency.db.CostField(decimal_places=15, default=0, max_digits=30, verbose_name='projected billed (USD)'),
        ),
        migrations.AlterField(
            model_name='dailyrollup',
            name='cost_cache_read_usd',
            field=agency.db.CostField(decimal_places=15, default=0, max_digits=30, verbose_name='cache read (USD)'),
        ),
        migrations.AlterField(
            model_name='dailyrollup',
            name='cost_cache_write_1h_usd',
            field=agency.db.CostField(decimal_places=15, default=0, max_digits=30, verbose_name='cache write (1 h) (USD)'),
        ),
        migrations.AlterField(
            model_name='dailyrollup',
            name='cost_cache_write_5m_usd',
            field=agency.db.CostField(decimal_places=15, default=0, max_digits=30, verbose_name='cache write (5 min) (USD)'),
        ),
        migrations.AlterField(
            model_name='dailyrollup',
            name='cost_discount_usd',
            field=agency.db.CostField(decimal_places=15, default=0, max_digits=30, verbose_name='batch discount (USD)'),
        ),
        migrations.AlterField(
            model_name='dailyrollup',
            name='cost_input_usd',
            field=agency.db.CostField(decimal_places=15, default=0, max_digits=30, verbose_name='input (USD)'),
        ),
        migrations.AlterField(
            model_name='dailyrollup',
            name='cost_output_usd',
            field=agency.db.CostField(decimal_places=15, default=0, max_digits=30, verbose_name='output (USD)'),
        ),
        migrations.AlterField(
            model_name='dailyrollup',
            name='cost_web_search_usd',
            field=agency.db.CostField(decimal_places=15, default=0, max_digits=30, verbose_name='web searches (USD)'),
        ),
        migrations.AlterField(
            model_name='invoice',
            name='agency_tax_id',
            field=models.CharField(blank=True, max_length=64, verbose_name='agency tax ID'),
        ),
        migrations.AlterField(
            model_name='invoice',
            name='billing_tax_id',
            field=models.CharField(blank=True, max_length=64, verbose_name='billing tax ID'),
        ),
        migrations.AlterField(
            model_name='invoice',
            name='markup_pct',
            field=models.DecimalField(decimal_places=2, default=0, max_digits=7, verbose_name='markup %'),
        ),
        migrations.AlterField(
            model_name='invoice',
            name='pdf',
            field=models.FileField(blank=True, storage=billing.models.invoice_storage, upload_to='invoices/', verbose_name='PDF'),
        ),
        migrations.AlterField(
            model_name='invoice',
            name='pdf_sha256',
            field=models.CharField(blank=True, max_length=64, verbose_name='PDF SHA-256'),
        ),
        migrations.AlterField(
            model_name='invoice',
            name='raw_cost_usd',
            field=agency.db.CostField(decimal_places=15, default=0, help_text="Sum of the lines' raw cost, unrounded.", max_digits=30, verbose_name='raw cost (USD)'),
        ),
        migrations.AlterField(
            model_name='invoice',
            name='tax_rate_pct',
            field=models.DecimalField(decimal_places=3, default=0, max_digits=6, verbose_name='tax rate %'),
        ),
        migrations.AlterField(
            model_name='invoiceline',
            name='billed_usd',
            field=agency.db.CostField(decimal_places=15, default=0, help_text='Raw cost with markup, unrounded.', max_digits=30, verbose_name='billed (USD)'),
        ),
        migrations.AlterField(
            model_name='invoiceline',
            name='cost_cache_read_usd',
            field=agency.db.CostField(decimal_places=15, default=0, max_digits=30, verbose_name='cache read (USD)'),
        ),
        migrations.AlterField(
            model_name='invoiceline',
            name='cost_cache_write_1h_usd',
            field=agency.db.CostField(decimal_places=15, default=0, max_digits=30, verbose_name='cache write (1 h) (USD)'),
        ),
        migrations.AlterField(
            model_name='invoiceline',
            name='cost_cache_write_5m_usd',
            field=agency.db.CostField(decimal_places=15, default=0, max_digits=30, verbose_name='cache write (5 min) (USD)'),
        ),
        migrations.AlterField(
            model_name='invoiceline',
            name='cost_discount_usd',
            field=agency.db.CostField(decimal_places=15, default=0, max_digits=30, verbose_name='batch discount (USD)'),
        ),
        migrations.AlterField(
            model_name='invoiceline',
            name='cost_input_usd',
            field=agency.db.CostField(decimal_places=15, default=0, max_digits=30, verbose_name='input (USD)'),
        ),
        migrations.AlterField(
            model_name='invoiceline',
            name='cost_output_usd',
            field=agency.db.CostField(decimal_places=15, default=0, max_digits=30, verbose_name='output (USD)'),
        ),
        migrations.AlterField(
            model_name='invoiceline',
            name='cost_web_search_usd',
            field=agency.db.CostField(decimal_places=15, default=0, max_digits=30, verbose_name='web searches (USD)'),
        ),
        migrations.AlterField(
            model_name='invoiceline',
            name='markup_pct',
            field=models.DecimalField(blank=True, decimal_places=2, help_text='Empty: it varied.', max_digits=7, null=True, verbose_name='markup %'),
        ),
        migrations.AlterField(
            model_name='invoiceline',
            name='raw_cost_usd',
            field=agency.db.CostField(decimal_places=15, default=0, max_digits=30, verbose_name='raw cost (USD)'),
        ),
    ]
