"""PostgreSQL keeps an issued invoice exactly as issued, whatever writes to it.

Replaces 0004's triggers, which froze the money but not everything printed:

- ``billing_invoice``: once issued, every column is frozen except those the status move
  in the same UPDATE may set. The list is of what may change, not of what may not, so a
  column added later is frozen too. Moves only go forward: finalized → sent → paid,
  finalized or sent → void; sending again re-stamps ``sent_at``; the PDF is set once after
  finalization (same transaction) and replaced once, by the VOID copy, when voided.
- ``billing_invoiceline``: no line of an issued invoice is inserted, changed, deleted, or
  moved onto one. The parent row is read FOR SHARE, so a line written concurrently with
  the invoice's finalization waits for it and then sees it issued.
- TRUNCATE (which skips row triggers) of the invoice tables is refused while an issued
  invoice exists, unless the session says ``SET clientmeter.allow_truncate = on`` (the test
  runner's settings do, to wipe its own database between tests).

SQLite has no plpgsql: there ``Invoice.save`` and the services are the guard.
"""

import importlib

from django.db import migrations

FORWARD = """
CREATE OR REPLACE FUNCTION billing_invoice_frozen() RETURNS trigger AS $$
DECLARE
    mutable text[];
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.status <> 'draft' THEN
            RAISE EXCEPTION 'invoice % is %: it cannot be deleted', OLD.number, OLD.status;
        END IF;
        RETURN OLD;
    END IF;
    IF OLD.status = 'draft' THEN
        RETURN NEW;
    END IF;
    -- The columns this status move may change; NULL: the move itself is refused.
    mutable := CASE
        WHEN OLD.status IN ('finalized', 'sent') AND NEW.status = 'sent'
            THEN ARRAY['status', 'sent_at']
        WHEN OLD.status IN ('finalized', 'sent') AND NEW.status = 'paid'
            THEN ARRAY['status', 'paid_at']
        WHEN OLD.status IN ('finalized', 'sent') AND NEW.status = 'void'
            THEN ARRAY['status', 'void_reason', 'voided_at', 'pdf', 'pdf_sha256']
        WHEN OLD.status = 'finalized' AND NEW.status = 'finalized' AND OLD.pdf = ''
            THEN ARRAY['pdf', 'pdf_sha256']
        WHEN NEW.status = OLD.status
            THEN ARRAY[]::text[]
    END;
    IF mutable IS NULL THEN
        RAISE EXCEPTION 'invoice % is %: it cannot become %', OLD.number, OLD.status, NEW.status;
    END IF;
    IF (to_jsonb(NEW) - mutable) IS DISTINCT FROM (to_jsonb(OLD) - mutable) THEN
        RAISE EXCEPTION 'invoice % is %: its figures are frozen', OLD.number, OLD.status;
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION billing_invoiceline_frozen() RETURNS trigger AS $$
DECLARE
    parent_status text;
BEGIN
    -- The line's invoice before and after (OLD is NULL on INSERT, NEW on DELETE).
    FOR parent_status IN
        SELECT status FROM billing_invoice WHERE id IN (OLD.invoice_id, NEW.invoice_id) FOR SHARE
    LOOP
        IF parent_status <> 'draft' THEN
            RAISE EXCEPTION 'the lines of a % invoice are frozen', parent_status;
        END IF;
    END LOOP;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION billing_invoice_truncate_guard() RETURNS trigger AS $$
BEGIN
    IF coalesce(current_setting('clientmeter.allow_truncate', true), '') = 'on' THEN
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM billing_invoice WHERE status <> 'draft') THEN
        RAISE EXCEPTION '% holds issued invoices: TRUNCATE refused', TG_TABLE_NAME
            USING HINT = 'To wipe a test or staging database: SET clientmeter.allow_truncate = on';
    END IF;
    RETURN NULL;
END $$ LANGUAGE plpgsql;

CREATE TRIGGER billing_invoice_truncate BEFORE TRUNCATE ON billing_invoice
    FOR EACH STATEMENT EXECUTE FUNCTION billing_invoice_truncate_guard();
CREATE TRIGGER billing_invoiceline_truncate BEFORE TRUNCATE ON billing_invoiceline
    FOR EACH STATEMENT EXECUTE FUNCTION billing_invoice_truncate_guard();
CREATE TRIGGER billing_invoicenumbercounter_truncate BEFORE TRUNCATE ON billing_invoicenumbercounter
    FOR EACH STATEMENT EXECUTE FUNCTION billing_invoice_truncate_guard();
"""

# Back to 0004: drop everything, then run 0004's own SQL again.
REVERSE = """
DROP TRIGGER IF EXISTS billing_invoicenumbercounter_truncate ON billing_invoicenumbercounter;
DROP TRIGGER IF EXISTS billing_invoiceline_truncate ON billing_invoiceline;
DROP TRIGGER IF EXISTS billing_invoice_truncate ON billing_invoice;
DROP FUNCTION IF EXISTS billing_invoice_truncate_guard();
DROP TRIGGER IF EXISTS billing_invoiceline_frozen ON billing_invoiceline;
DROP TRIGGER IF EXISTS billing_invoice_frozen ON billing_invoice;
"""


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD, params=None)


def reverse(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(REVERSE, params=None)
        previous = importlib.import_module("billing.migrations.0004_invoice_frozen_triggers")
        schema_editor.execute(previous.FORWARD, params=None)


class Migration(migrations.Migration):
    dependencies = [("billing", "0006_move_invoice_pdfs_to_private_storage")]

    operations = [migrations.RunPython(forward, reverse)]
