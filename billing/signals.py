"""Signals of billing.

``alert_deliveries_created`` is sent after the commit that created alert deliveries, with
``delivery_ids``. ``billing.tasks`` enqueues one send task per delivery (connected in
``BillingConfig.ready``): the services that fire alerts cannot import the tasks module,
which imports them.
"""

from __future__ import annotations

from django.dispatch import Signal

alert_deliveries_created = Signal()
