"""Invoice PDF: the HTML template rendered by WeasyPrint, from the invoice's own snapshot.

Everything printed comes from the invoice and its lines (frozen at finalization), never
from the live client or agency rows, so a re-render prints the same figures.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

from django.conf import settings
from django.core.cache import cache
from django.core.files.storage import default_storage
from django.template.loader import render_to_string

from agency.calendar import month_bounds, today
from agency.money import ZERO, format_usd, round_money, split_cents
from billing.models import Invoice, InvoiceLine, InvoiceLineKind, InvoiceStatus
from tracking.buckets import Reach, buckets

# WeasyPrint reports every rendering step at INFO: noise in the worker logs.
logging.getLogger("weasyprint.progress").setLevel(logging.WARNING)

# Unit prices are rates, not amounts: printed to 4 decimal places (cache reads cost
# fractions of a cent per MTok on small models). Amounts go through round_money only.
RATE_PLACES = Decimal("0.0001")
# Printed per line: a quantity with its unit price for each billed bucket that has both,
# then the amounts without a quantity (the batch discount) as included in the line.
_KINDS = tuple(b for b in buckets(Reach.INVOICE) if b.token_column and b.cost_column)
_INCLUDED = tuple(b for b in buckets(Reach.INVOICE) if b.cost_column and not b.token_column)


@dataclass
class Detail:
    label: str
    quantity: str
    unit_price: str
    cost: str = ""
    amount: str = ""


@dataclass
class PrintedLine:
    description: str
    events: int
    events_text: str
    details: list[Detail]
    raw_cost: str
    markup: str
    amount: str


@dataclass
class Section:
    title: str
    adjustment: bool
    lines: list[PrintedLine] = field(default_factory=list)


def _unit_price(cost: Decimal, quantity: int, per: Decimal, factor: Decimal) -> str:
    if not quantity:
        return ""
    price = (cost * factor / quantity * per).quantize(RATE_PLACES, rounding=ROUND_HALF_UP)
    # At least cents, more only when the rate has them: $3.00, $0.0375.
    text = f"{price:,}".rstrip("0")
    decimals = len(text.split(".")[1]) if "." in text else 0
    return f"${price:,.{max(decimals, 2)}f}"


def _details(line: InvoiceLine, *, show_markup: bool) -> list[Detail]:
    """One sub-row per kind of tokens (then the batch discount), each with its amount.

    A sub-row's amount is its share of the line's amount, in proportion to its cost, and
    the shares are rounded with split_cents so they add up to the line's amount to the
    cent (a late-usage adjustment's amount is not simply its billed figure rounded). With
    the markup shown the sub-rows' costs likewise add up to the line's rounded cost.
    """
    # Without the markup shown, unit prices are billed prices (raw × the line's markup).
    factor = Decimal(1)
    if not show_markup and line.raw_cost_usd:
        factor = line.billed_usd / line.raw_cost_usd
    rows: list[tuple[str, str, str, Decimal]] = []
    for kind in _KINDS:
        quantity = getattr(line, str(kind.token_column))
        cost = getattr(line, str(kind.cost_column))
        if quantity or cost:
            price = _unit_price(cost, quantity, kind.unit.per, factor)
            unit_price = f"{price} / {kind.unit.label}" if price else ""
            rows.append((kind.label, f"{quantity:,}", unit_price, cost))
    for included in _INCLUDED:
        cost = getattr(line, str(included.cost_column))
        if cost:
            rows.append((included.label, "", "", cost))
    costs = [row[3] for row in rows]
    if line.raw_cost_usd:
        amounts = split_cents([c * line.amount_usd / line.raw_cost_usd for c in costs])
    else:
        amounts = [ZERO for _ in costs]
    raw = split_cents(costs)
    details = [
        Detail(label, quantity, unit_price, format_usd(cost), format_usd(amount))
        for (label, quantity, unit_price, _), cost, amount in zip(rows, raw, amounts, strict=True)
    ]
    if line.unpriced_events:
        details.append(Detail(f"{line.unpriced_events:,} calls not yet priced", "", ""))
    return details


def _printed(line: InvoiceLine, *, show_markup: bool, show_details: bool) -> PrintedLine:
    markup = "varied" if line.markup_pct is None else f"{line.markup_pct.normalize():f} %"
    return PrintedLine(
        description=line.description,
        events=line.events,
        events_text=f"{line.events:,} call{'' if line.events == 1 else 's'}",
        details=_details(line, show_markup=show_markup) if show_details else [],
        raw_cost=format_usd(round_money(line.raw_cost_usd)),
        markup=markup,
        amount=format_usd(line.amount_usd),
    )


def invoice_sections(invoice: Invoice) -> list[Section]:
    """The invoice's lines as printed: this month's usage, then one section per month of
    late-usage adjustments, clearly labelled."""
    sections: dict[object, Section] = {}
    for line in invoice.lines.order_by("position"):
        if line.kind == InvoiceLineKind.USAGE:
            key: object = "usage"
            title = f"Usage in {line.usage_month:%B %Y}"
        else:
            key = line.usage_month
            title = f"Usage from {line.usage_month:%B %Y} received after invoicing"
        section = sections.setdefault(key, Section(title, key != "usage"))
        section.lines.append(
            _printed(
                line,
                show_markup=invoice.show_markup,
                show_details=invoice.show_pricing_details,
            )
        )
    return list(sections.values())


def _logo_url(name: str) -> str:
    if not name or not default_storage.exists(name):
        return ""
    return Path(default_storage.path(name)).as_uri()


def invoice_pdf_html(invoice: Invoice) -> str:
    issue_date = invoice.issue_date or today()
    details = invoice.show_pricing_details
    markup = invoice.show_markup and details
    context = {
        "invoice": invoice,
        "sections": invoice_sections(invoice),
        "issue_date": issue_date,
        "due_date": invoice.due_date or issue_date + timedelta(days=invoice.payment_terms_days),
        "period_end": month_bounds(invoice.month)[1],
        "subtotal": format_usd(invoice.subtotal_usd),
        "tax": format_usd(invoice.tax_usd),
        "total": format_usd(invoice.total_usd),
        "raw_total": format_usd(round_money(invoice.raw_cost_usd)),
        "has_tax": invoice.tax_rate_pct > ZERO,
        "tax_rate": f"{invoice.tax_rate_pct.normalize():f}",
        "watermark": _watermark(invoice),
        "logo_url": _logo_url(invoice.agency_logo),
        "currency": invoice.client.currency if invoice.client_id else "USD",
        # With pricing details off the document shows amounts per line only: no tokens,
        # unit prices, markup or unpriced calls (Client.show_pricing_details).
        "details": details,
        "markup": markup,
        "columns": 6 if markup else 4 if details else 3,
        "paid_on": invoice.paid_day,
        "amount_due": format_usd(
            ZERO if invoice.status == InvoiceStatus.PAID else invoice.total_usd
        ),
    }
    return render_to_string("billing/invoice_pdf.html", context)


def _watermark(invoice: Invoice) -> str:
    if invoice.status == InvoiceStatus.VOID:
        return "VOID"
    if invoice.status == InvoiceStatus.PAID:
        return "PAID"
    if invoice.status == InvoiceStatus.DRAFT:
        return "DRAFT"
    return ""


STYLESHEET = Path(settings.BASE_DIR) / "templates" / "billing" / "invoice_pdf.css"


class _Renderer:
    """WeasyPrint, prepared once per process: its fonts (one ``FontConfiguration``, so
    fontconfig is set up and fonts are loaded once, not per invoice), the stylesheet
    (parsed once), an image cache, and a URL fetcher that refuses the network: a PDF
    only reads files under the storage that holds the agency's logo, or ``data:`` URLs.
    """

    def __init__(self) -> None:
        # Imported here: WeasyPrint loads Pango, HarfBuzz and fontconfig (about a
        # second), which web processes that never render a PDF need not pay at start.
        from weasyprint import CSS
        from weasyprint.text.fonts import FontConfiguration
        from weasyprint.urls import URLFetcher

        class LocalFetcher(URLFetcher):
            def fetch(self, url: str, headers: Any = None) -> Any:
                if url.startswith("data:"):
                    return super().fetch(url, headers)
                if url.startswith("file:"):
                    path = Path(url2pathname(urlsplit(url).path)).resolve()
                    # The storage's folder as it is now (settings may change at run time).
                    if path.is_relative_to(Path(default_storage.path("")).resolve()):
                        return super().fetch(url, headers)
                raise ValueError(f"an invoice PDF fetches nothing from {url}")

        self.fetcher = LocalFetcher(allowed_protocols={"file", "data"})
        self.fonts = FontConfiguration()
        self.css = CSS(
            string=STYLESHEET.read_text(),
            font_config=self.fonts,
            url_fetcher=self.fetcher,
        )
        self.images: dict[str, Any] = {}

    def document(self, html: str) -> Any:
        from weasyprint import HTML

        return HTML(string=html, base_url=str(settings.BASE_DIR), url_fetcher=self.fetcher).render(
            stylesheets=[self.css], font_config=self.fonts, cache=self.images
        )


_renderer: _Renderer | None = None


def pdf_renderer() -> _Renderer:
    """The process's renderer, prepared on first use (a worker may call it at start)."""
    global _renderer
    if _renderer is None:
        _renderer = _Renderer()
    return _renderer


def invoice_pdf_document(invoice: Invoice) -> Any:
    """The invoice laid out (a WeasyPrint ``Document``: pages, boxes), not yet a PDF."""
    return pdf_renderer().document(invoice_pdf_html(invoice))


# A PDF rendered ahead of its finalization (by a worker, in parallel with others) waits
# in the cache under the hash of its HTML: the finalizing transaction uses it only if it
# would print exactly the same document, else renders its own.
PREPARED_SECONDS = 2 * 3600


def prepared_key(html: str) -> str:
    return f"billing:pdf-prepared:{hashlib.sha256(html.encode()).hexdigest()}"


def invoice_pdf_prepare(invoice: Invoice) -> str:
    """Render the invoice (as it is in memory: typically a draft given the figures of its
    finalization) and keep the PDF in the cache for ``invoice_pdf_render(prepared=True)``.
    Returns the cache key. Safe to run twice."""
    html = invoice_pdf_html(invoice)
    key = prepared_key(html)
    if not cache.has_key(key):
        cache.set(key, _pdf(pdf_renderer().document(html)), PREPARED_SECONDS)
    return key


def invoice_pdf_render(invoice: Invoice, *, prepared: bool = False) -> bytes:
    """The invoice as PDF bytes (A4). With ``prepared``, a PDF rendered ahead of time for
    exactly this document is taken from the cache instead, when there is one."""
    html = invoice_pdf_html(invoice)
    if prepared:
        key = prepared_key(html)
        content: bytes | None = cache.get(key)
        if content is not None:
            cache.delete(key)
            return content
    return _pdf(pdf_renderer().document(html))


def _pdf(document: Any) -> bytes:
    pdf = document.write_pdf()
    assert pdf is not None
    return bytes(pdf)
