"""Record a finished month-end run for every month that already has invoices, so the
daily job (which finishes unfinished or missed runs) does not run those months again."""

from django.db import migrations
from django.utils import timezone


def record(apps, schema_editor):
    Invoice = apps.get_model("billing", "Invoice")
    MonthEndRun = apps.get_model("billing", "MonthEndRun")
    now = timezone.now()
    months = Invoice.objects.order_by().values_list("month", flat=True).distinct()
    MonthEndRun.objects.bulk_create(
        [MonthEndRun(month=month, started_at=now, finished_at=now) for month in months],
        ignore_conflicts=True,
    )


def forget(apps, schema_editor):
    apps.get_model("billing", "MonthEndRun").objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [("billing", "0008_monthendrun")]

    operations = [migrations.RunPython(record, forget)]
