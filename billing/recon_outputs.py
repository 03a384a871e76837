"""The reconciliation as shown: the staff page's body (rendered HTML) and the API's
answer (encoded JSON), stored by ``billing.selectors.reconciliation.stored`` under the
watermark of their inputs, so a request reads them back instead of computing the month.

``recon_outputs_refresh`` stores both from one computation; the rollup job calls it
(``billing.tasks.recon_outputs_refresh_task``) so the first visitor after a rebuild, a
sync or a rate edit seldom computes anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

import msgspec
from django.conf import settings
from django.template.loader import render_to_string

from agency.calendar import FIRST_MONTH, month_start, shift_month
from agency.money import round_money
from billing import charts
from billing.selectors import reconciliation as recon
from tracking import schema

# --- the page ----------------------------------------------------------------------------

# The spend-by-key table shows the largest gaps; the rest is one total row.
ACCOUNT_ROWS = 25


@dataclass(frozen=True)
class Shown:
    """Money as the page prints it: to the cent, untracked = provider − tracked as shown."""

    provider_cost_usd: Decimal
    tracked_cost_usd: Decimal

    @property
    def untracked_cost_usd(self) -> Decimal:
        return self.provider_cost_usd - self.tracked_cost_usd


def _shown(data: recon.Reconciliation) -> tuple[list[tuple[recon.ModelFigures, Shown]], Shown]:
    """Each model's money rounded to the cent, and the month's as the sum of those rows:
    the rule of the invoice, so every column adds up on the page (the API is exact)."""
    rows = [
        (
            m,
            Shown(
                round_money(m.figures.provider_cost_usd), round_money(m.figures.tracked_cost_usd)
            ),
        )
        for m in data.by_model
    ]
    total = Shown(
        sum((shown.provider_cost_usd for _, shown in rows), Decimal(0)),
        sum((shown.tracked_cost_usd for _, shown in rows), Decimal(0)),
    )
    return rows, total


def page_body(data: recon.Reconciliation, month: date, day: date) -> bytes:
    """The page's ``#recon-body`` for ``month`` seen on ``day`` (its links depend on the
    current month), UTF-8: no user or request in it, so it is stored as rendered."""
    series = recon.chart_series(data)
    models, shown = _shown(data)
    context = {
        "data": data,
        "models": models,
        "shown": shown,
        "accounts": data.accounts[:ACCOUNT_ROWS],
        "more_accounts": recon.accounts_rest(data, ACCOUNT_ROWS),
        # The picker's months, plus the one shown (as on the dashboards).
        "months": sorted({*recon.report_months(), month}, reverse=True),
        "chart": charts.stacked_bars(
            data.days, series, label="Provider cost per day: tracked or not"
        ),
        "legend": charts.legend([name for name, values in series.items() if any(values)]),
        "drift_limit": recon.DRIFT_LIMIT_PCT,
        "time_zone": settings.TIME_ZONE,
        "previous_month": shift_month(month, -1) if month > FIRST_MONTH else None,
        "next_month": shift_month(month, 1) if month < month_start(day) else None,
    }
    return render_to_string("billing/reconciliation.html#recon-body", context).encode()


# --- the API -----------------------------------------------------------------------------

TWO_PLACES = Decimal("0.01")


def _exact(amount: Decimal) -> str:
    """Every significant digit, at least the cents, never an exponent ("0E-15"): the
    same text whatever scale the database summed at (11.40, 0.0075, 12.499995)."""
    digits = abs(amount).normalize() if amount == 0 else amount.normalize()
    places = max(2, -int(digits.as_tuple().exponent))
    return f"{digits:.{places}f}"


def _pct2(value: Decimal | None) -> str | None:
    if value is None:
        return None
    rounded = value.quantize(TWO_PLACES, rounding=ROUND_HALF_UP)
    return str(abs(rounded) if rounded == 0 else rounded)  # "0.00", never "-0.00"


def _tokens(counts: dict[str, int]) -> schema.ReportTokens:
    return schema.ReportTokens(**counts)


def _model_payload(model: recon.ModelFigures) -> schema.ReconciliationModel:
    f = model.figures
    return schema.ReconciliationModel(
        provider=model.provider,
        model=model.model,
        provider_cost_usd=_exact(f.provider_cost_usd),
        tracked_cost_usd=_exact(f.tracked_cost_usd),
        untracked_cost_usd=_exact(f.untracked_cost_usd),
        coverage_pct=_pct2(f.coverage_pct),
        drift_pct=_pct2(f.drift_pct),
        drifting=f.drifting,
        provider_tokens=_tokens(f.provider_tokens),
        tracked_tokens=_tokens(f.tracked_tokens),
    )


def _day_payload(day: recon.DayFigures) -> schema.ReconciliationDay:
    f = day.figures
    return schema.ReconciliationDay(
        day=day.day.isoformat(),
        provider_cost_usd=_exact(f.provider_cost_usd),
        tracked_cost_usd=_exact(f.tracked_cost_usd),
        untracked_cost_usd=_exact(f.untracked_cost_usd),
        coverage_pct=_pct2(f.coverage_pct),
        drift_pct=_pct2(f.drift_pct),
        provider_tokens=_tokens(f.provider_tokens),
        tracked_tokens=_tokens(f.tracked_tokens),
        models=[_model_payload(m) for m in day.models],
    )


def reconciliation_payload(data: recon.Reconciliation) -> schema.Reconciliation:
    total = data.total
    return schema.Reconciliation(
        month=data.month.strftime("%Y-%m"),
        has_report=data.has_report,
        provider_cost_usd=_exact(total.provider_cost_usd),
        tracked_cost_usd=_exact(total.tracked_cost_usd),
        coverage_pct=_pct2(total.coverage_pct),
        untracked_cost_usd=_exact(total.untracked_cost_usd),
        untracked_tokens=_tokens(total.untracked_tokens),
        drift_pct=_pct2(total.drift_pct),
        report_sourced_cost_usd=_exact(data.report_sourced.provider_cost_usd),
        not_in_report_cost_usd=_exact(data.not_in_report.tracked_cost_usd),
        models=[_model_payload(m) for m in data.by_model],
        days=[_day_payload(d) for d in data.by_day],
    )


def api_body(data: recon.Reconciliation) -> bytes:
    return msgspec.json.encode(reconciliation_payload(data))


# --- stored ------------------------------------------------------------------------------


def page_key(day: date) -> str:
    """The page's stored name: its links depend on the current month."""
    return f"page:{month_start(day):%Y-%m}"


def page_output(month: date, day: date) -> bytes:
    return recon.stored(
        month, page_key(day), lambda: page_body(recon.reconciliation_for(month), month, day)
    )


def api_output(month: date) -> bytes:
    return recon.stored(month, "api", lambda: api_body(recon.reconciliation_for(month)))


def recon_outputs_refresh(*, month: date, day: date) -> bool:
    """Store the month's page (as seen on ``day``) and API answer unless both are stored
    under the current watermark, computing the month once for both. Returns whether it
    was computed."""
    computed: list[recon.Reconciliation] = []

    def data() -> recon.Reconciliation:
        if not computed:
            computed.append(recon.reconciliation_for(month))
        return computed[0]

    recon.stored(month, page_key(day), lambda: page_body(data(), month, day))
    recon.stored(month, "api", lambda: api_body(data()))
    return bool(computed)
