"""PostgreSQL triggers that refuse changing an issued invoice's figures or lines.

The model guard (Invoice.save) gives the friendly error; these catch everything else
(queryset.update, raw SQL). SQLite has no plpgsql: there the model guard is the check.
"""

from django.db import migrations

FORWARD = """
CREATE OR REPLACE FUNCTION billing_invoice_frozen() RETURNS trigger AS $$
BEGIN
    IF OLD.status <> 'draft' THEN
        IF TG_OP = 'DELETE' THEN
            RAISE EXCEPTION 'invoice % is %: it cannot be deleted', OLD.number, OLD.status;
        END IF;
        IF NEW.status = 'draft'
           OR NEW.number IS DISTINCT FROM OLD.number
           OR NEW.client_id <> OLD.client_id
           OR NEW.month <> OLD.month
           OR NEW.issue_date IS DISTINCT FROM OLD.issue_date
           OR NEW.due_date IS DISTINCT FROM OLD.due_date
           OR NEW.markup_pct <> OLD.markup_pct
           OR NEW.tax_rate_pct <> OLD.tax_rate_pct
           OR NEW.raw_cost_usd <> OLD.raw_cost_usd
           OR NEW.subtotal_usd <> OLD.subtotal_usd
           OR NEW.tax_usd <> OLD.tax_usd
           OR NEW.total_usd <> OLD.total_usd THEN
            RAISE EXCEPTION 'invoice % is %: its figures are frozen', OLD.number, OLD.status;
        END IF;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;

CREATE TRIGGER billing_invoice_frozen BEFORE UPDATE OR DELETE ON billing_invoice
    FOR EACH ROW EXECUTE FUNCTION billing_invoice_frozen();

CREATE OR REPLACE FUNCTION billing_invoiceline_frozen() RETURNS trigger AS $$
DECLARE
    parent_status text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT status INTO parent_status FROM billing_invoice WHERE id = NEW.invoice_id;
    ELSE
        SELECT status INTO parent_status FROM billing_invoice WHERE id = OLD.invoice_id;
    END IF;
    IF parent_status IS NOT NULL AND parent_status <> 'draft' THEN
        RAISE EXCEPTION 'the lines of a % invoice are frozen', parent_status;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;

CREATE TRIGGER billing_invoiceline_frozen BEFORE INSERT OR UPDATE OR DELETE ON billing_invoiceline
    FOR EACH ROW EXECUTE FUNCTION billing_invoiceline_frozen();
"""

REVERSE = """
DROP TRIGGER IF EXISTS billing_invoiceline_frozen ON billing_invoiceline;
DROP FUNCTION IF EXISTS billing_invoiceline_frozen();
DROP TRIGGER IF EXISTS billing_invoice_frozen ON billing_invoice;
DROP FUNCTION IF EXISTS billing_invoice_frozen();
"""


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD, params=None)


def reverse(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(REVERSE, params=None)


class Migration(migrations.Migration):
    dependencies = [("billing", "0003_invoices")]

    operations = [migrations.RunPython(forward, reverse)]
