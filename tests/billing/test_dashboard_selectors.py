from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import time_machine

from agency.models import Client
from billing.models import DailyRollup, ModelDailyRollup
from billing.selectors import dashboard
from billing.services.rollups import rollups_rebuild_period
from billing.templatetags.dashboard import sort_headers
from billing.views.dashboard import month_param
from tests.clock import AGENCY_TZ
from tests.factories import ClientFactory, DailyRollupFactory, UsageEventFactory
from tracking.models import DataKind
from tracking.services import month_versions_touch

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("private_cache")]

TODAY = dt.date(2026, 11, 20)
NOON = dt.datetime(2026, 11, 20, 12, tzinfo=AGENCY_TZ)


def _rebuild_rollups():
    """The top lists read the rollups: build them from the events, as the beat would."""
    rollups_rebuild_period(start=dt.date(2026, 10, 1), end=dt.date(2026, 11, 30))


def _overview(**kwargs):
    return dashboard.overview(Client.objects.all(), now=NOON, **kwargs)


def test_overview_sums_month_to_date_from_rollups_only():
    client = ClientFactory.create(markup_pct=Decimal("25"))
    DailyRollupFactory.create(
        client=client, day=dt.date(2026, 11, 3), cost_usd=Decimal("10.000000001")
    )
    DailyRollupFactory.create(client=client, day=dt.date(2026, 11, 19), cost_usd=Decimal("2"))
    DailyRollupFactory.create(client=client, day=dt.date(2026, 10, 31), cost_usd=Decimal("500"))
    [row] = _overview().rows
    # Rounded per invoice line (one model here), as the invoice will say.
    assert row.raw_usd == Decimal("12.00")
    assert row.billed_usd == Decimal("15.00")
    assert row.margin_usd == Decimal("3.00")


def test_overview_totals_are_the_sum_of_rows():
    for cost in ("1.10", "2.20", "3.30"):
        DailyRollupFactory.create(client=ClientFactory.create(), day=TODAY, cost_usd=Decimal(cost))
    data = _overview()
    assert data.totals.raw_usd == Decimal("6.60")
    assert data.totals.billed_usd == sum(r.billed_usd for r in data.rows)


def test_overview_leaves_out_inactive_clients():
    ClientFactory.create(name="Gone", active=False)
    ClientFactory.create(name="Here")
    assert [r.client.name for r in _overview().rows] == ["Here"]


def test_overview_sparkline_puts_each_day_in_its_slot():
    client = ClientFactory.create(markup_pct=Decimal("0"))
    DailyRollupFactory.create(client=client, day=TODAY, cost_usd=Decimal("4"))
    DailyRollupFactory.create(
        client=client, day=TODAY - dt.timedelta(days=29), cost_usd=Decimal("1")
    )
    DailyRollupFactory.create(
        client=client, day=TODAY - dt.timedelta(days=30), cost_usd=Decimal("9")
    )
    [row] = _overview().rows
    assert len(row.spark) == 30
    assert row.spark[-1] == Decimal("4")
    assert row.spark[0] == Decimal("1")
    assert sum(row.spark) == Decimal("5")


def test_overview_sorts_by_billed_descending():
    for name, cost in (("A", "1"), ("B", "3"), ("C", "2")):
        DailyRollupFactory.create(
            client=ClientFactory.create(name=name), day=TODAY, cost_usd=Decimal(cost)
        )
    assert [r.client.name for r in _overview(sort="-billed").rows] == ["B", "C", "A"]


def test_overview_unknown_sort_falls_back_to_name():
    ClientFactory.create(name="Zed")
    ClientFactory.create(name="Abe")
    data = _overview(sort="client_id; drop table")
    assert data.sort == "name"
    assert [r.client.name for r in data.rows] == ["Abe", "Zed"]


def test_overview_counts_untagged_usage_per_client():
    client = ClientFactory.create()
    DailyRollupFactory.create(client=client, day=TODAY, project="", events=7)
    DailyRollupFactory.create(client=client, day=TODAY, project="web", events=5)
    data = _overview()
    assert data.rows[0].untagged_events == 7
    assert (data.untagged_events, data.untagged_clients) == (7, 1)


def test_overview_lists_models_waiting_for_a_rate():
    first, second = ClientFactory.create(), ClientFactory.create()
    DailyRollupFactory.create(
        client=first, day=TODAY, model="claude-new-9", events=2, unpriced_events=2
    )
    DailyRollupFactory.create(
        client=first,
        day=TODAY - dt.timedelta(days=3),
        model="claude-new-9",
        events=1,
        unpriced_events=1,
    )
    DailyRollupFactory.create(
        client=second, day=TODAY, model="claude-new-9", events=4, unpriced_events=4
    )
    DailyRollupFactory.create(client=second, day=TODAY, model="claude-sonnet-4-5")
    [model] = _overview().unpriced_models
    assert (model.model, model.events, model.clients) == ("claude-new-9", 7, 2)


def test_overview_unpriced_models_only_count_the_given_clients():
    mine, other = ClientFactory.create(), ClientFactory.create()
    DailyRollupFactory.create(client=other, day=TODAY, unpriced_events=1)
    data = dashboard.overview(Client.objects.filter(pk=mine.pk), now=NOON)
    assert data.unpriced_models == []


def test_sort_headers_reverse_the_sorted_column():
    headers = sort_headers("-billed")
    assert headers["billed"].next_sort == "billed"
    assert headers["billed"].aria_sort == "descending"
    assert headers["raw"].next_sort == "-raw"
    assert headers["name"].next_sort == "name"


# --- client page ---------------------------------------------------------------------


def test_parse_month_reads_year_and_month():
    assert month_param("2026-02", today=TODAY) == dt.date(2026, 2, 1)


def test_parse_month_falls_back_to_this_month_on_garbage():
    assert month_param("2026-13", today=TODAY) == dt.date(2026, 11, 1)
    assert month_param(None, today=TODAY) == dt.date(2026, 11, 1)


def test_client_month_groups_rollups_by_model_project_and_feature():
    client = ClientFactory.create()
    DailyRollupFactory.create(client=client, day=TODAY, model="a", project="p", feature="chat")
    DailyRollupFactory.create(client=client, day=TODAY, model="a", project="q", feature="chat")
    DailyRollupFactory.create(client=client, day=TODAY, model="b", project="p", feature="")
    data = dashboard.client_month(client, month=dt.date(2026, 11, 1), today=TODAY)
    assert sorted((g.name, g.events) for g in data.by_model) == [("a", 2), ("b", 1)]
    assert sorted((g.name, g.events) for g in data.by_project) == [("p", 2), ("q", 1)]
    assert sorted((g.name, g.events) for g in data.by_feature) == [("", 1), ("chat", 2)]


def test_client_month_ignores_other_clients_and_months():
    client = ClientFactory.create()
    DailyRollupFactory.create(client=client, day=TODAY, cost_usd=Decimal("1"))
    DailyRollupFactory.create(client=client, day=dt.date(2026, 10, 31), cost_usd=Decimal("100"))
    DailyRollupFactory.create(client=ClientFactory.create(), day=TODAY, cost_usd=Decimal("1000"))
    data = dashboard.client_month(client, month=dt.date(2026, 11, 1), today=TODAY)
    assert data.totals.raw_usd == Decimal("1")


def test_cache_hit_ratio_is_reads_over_all_prompt_tokens():
    client = ClientFactory.create()
    DailyRollupFactory.create(
        client=client,
        day=TODAY,
        feature="chat",
        input_tokens=100,
        cache_read_tokens=600,
        cache_write_5m_tokens=200,
        cache_write_1h_tokens=100,
    )
    data = dashboard.client_month(client, month=dt.date(2026, 11, 1), today=TODAY)
    assert data.by_feature[0].cache_hit_ratio == Decimal("0.6")


def test_daily_by_model_stacks_billed_per_day():
    client = ClientFactory.create(markup_pct=Decimal("0"))
    DailyRollupFactory.create(
        client=client, day=dt.date(2026, 11, 2), model="a", cost_usd=Decimal("3")
    )
    DailyRollupFactory.create(
        client=client, day=dt.date(2026, 11, 2), model="b", cost_usd=Decimal("1")
    )
    data = dashboard.client_month(client, month=dt.date(2026, 11, 1), today=TODAY)
    assert len(data.days) == 30
    assert data.daily_by_model["a"][1] == Decimal("3")
    assert data.daily_by_model["b"][1] == Decimal("1")
    assert data.daily_by_model["a"][0] == Decimal("0")


def test_average_prompt_tokens_per_call_by_day():
    client = ClientFactory.create()
    DailyRollupFactory.create(
        client=client, day=dt.date(2026, 11, 1), events=4, input_tokens=1000, cache_read_tokens=1000
    )
    data = dashboard.client_month(client, month=dt.date(2026, 11, 1), today=TODAY)
    assert data.avg_prompt_tokens[0] == Decimal("500")
    assert data.avg_prompt_tokens[1] is None


def test_week_over_week_compares_the_last_seven_days_with_the_seven_before():
    client = ClientFactory.create(markup_pct=Decimal("0"))
    DailyRollupFactory.create(client=client, day=TODAY, cost_usd=Decimal("15"))
    DailyRollupFactory.create(
        client=client, day=TODAY - dt.timedelta(days=7), cost_usd=Decimal("10")
    )
    DailyRollupFactory.create(
        client=client, day=TODAY - dt.timedelta(days=14), cost_usd=Decimal("99")
    )
    wow = dashboard.client_month(client, month=dt.date(2026, 11, 1), today=TODAY).week_over_week
    assert (wow.this_week_usd, wow.last_week_usd) == (Decimal("15"), Decimal("10"))
    assert wow.change_pct == Decimal("50")


def test_week_over_week_reaches_into_the_previous_month():
    client = ClientFactory.create(markup_pct=Decimal("0"))
    DailyRollupFactory.create(client=client, day=dt.date(2026, 10, 27), cost_usd=Decimal("8"))
    wow = dashboard.client_month(
        client, month=dt.date(2026, 11, 1), today=dt.date(2026, 11, 3)
    ).week_over_week
    assert wow.last_week_usd == Decimal("8")


def test_months_with_usage_offer_only_months_with_data_and_never_future_ones():
    client = ClientFactory.create()
    DailyRollupFactory.create(client=client, day=dt.date(2026, 9, 5))
    # A future-dated bucket (a client clock running ahead) offers no future month.
    DailyRollupFactory.create(client=client, day=dt.date(2027, 1, 5))
    assert dashboard.months_with_usage(client, today=TODAY) == [dt.date(2026, 9, 1)]


@time_machine.travel(NOON, tick=False)
def test_end_users_ranks_by_cost_within_client_and_month():
    client = ClientFactory.create(markup_pct=Decimal("10"))
    UsageEventFactory.create(client=client, end_user="alice", cost_usd=Decimal("1"))
    UsageEventFactory.create(client=client, end_user="bob", cost_usd=Decimal("9"))
    UsageEventFactory.create(client=client, end_user="bob", cost_usd=Decimal("1"))
    UsageEventFactory.create(
        client=client,
        end_user="carol",
        cost_usd=Decimal("50"),
        occurred_at=dt.datetime(2026, 10, 31, 23, 59, tzinfo=AGENCY_TZ),
    )
    UsageEventFactory.create(
        client=ClientFactory.create(), end_user="mallory", cost_usd=Decimal("70")
    )
    _rebuild_rollups()
    users = dashboard.end_users(client, month=dt.date(2026, 11, 1))
    assert [(u.name, u.events, u.raw_usd) for u in users] == [
        ("bob", 2, Decimal("10")),
        ("alice", 1, Decimal("1")),
    ]
    assert users[0].billed_usd == Decimal("11")


@time_machine.travel(NOON, tick=False)
def test_end_users_ranks_numerically_not_as_text():
    client = ClientFactory.create()
    UsageEventFactory.create(client=client, end_user="small", cost_usd=Decimal("9"))
    UsageEventFactory.create(client=client, end_user="large", cost_usd=Decimal("10"))
    _rebuild_rollups()
    assert [u.name for u in dashboard.end_users(client, month=dt.date(2026, 11, 1))] == [
        "large",
        "small",
    ]


@time_machine.travel(NOON, tick=False)
def test_end_users_stop_at_the_limit():
    client = ClientFactory.create()
    for i in range(5):
        UsageEventFactory.create(client=client, end_user=f"u{i}")
    _rebuild_rollups()
    assert len(dashboard.end_users(client, month=dt.date(2026, 11, 1), limit=3)) == 3


@time_machine.travel(NOON, tick=False)
def test_top_prompts_show_calls_and_time_span():
    client = ClientFactory.create()
    start = dt.datetime(2026, 11, 20, 10, 0, tzinfo=AGENCY_TZ)
    for minute in range(10):
        UsageEventFactory.create(
            client=client,
            prompt_hash="storm",
            occurred_at=start + dt.timedelta(minutes=minute / 2),
            cost_usd=Decimal("0.5"),
        )
    UsageEventFactory.create(client=client, prompt_hash="calm", cost_usd=Decimal("1"))
    UsageEventFactory.create(client=client, prompt_hash="", cost_usd=Decimal("100"))
    _rebuild_rollups()
    storm, calm = dashboard.top_prompts(client, month=dt.date(2026, 11, 1))
    assert (storm.prompt_hash, storm.calls, storm.raw_usd) == ("storm", 10, Decimal("5.0"))
    assert storm.span == dt.timedelta(minutes=4, seconds=30)
    assert storm.calls_per_minute is not None and storm.calls_per_minute > 2
    assert calm.calls_per_minute is None


def test_overview_takes_month_today_and_budget_from_one_moment():
    """The first hour of December, while the real clock is elsewhere: the month, today's
    live figures and the burn-rate projection all follow the moment given."""
    client = ClientFactory.create(monthly_budget_usd=Decimal("1000"), markup_pct=Decimal("0"))
    DailyRollupFactory.create(client=client, day=dt.date(2026, 11, 30), cost_usd=Decimal("900"))
    DailyRollupFactory.create(client=client, day=dt.date(2026, 12, 1), cost_usd=Decimal("2"))
    first_hour = dt.datetime(2026, 12, 1, 0, 30, tzinfo=AGENCY_TZ)

    data = dashboard.overview(Client.objects.all(), now=first_hour)

    [row] = data.rows
    assert data.month == dt.date(2026, 12, 1)
    assert (row.billed_usd, row.spark[-1], row.spark[-2]) == (2, 2, 900)
    assert row.budget is not None
    assert (row.budget.elapsed_hours, row.budget.month_hours) == (1, 744)
    assert row.budget.projected_billed_usd == Decimal("1488")


def test_overview_reads_today_live():
    client = ClientFactory.create(markup_pct=Decimal("0"))
    DailyRollupFactory.create(client=client, day=TODAY, cost_usd=Decimal("1"))
    _overview()
    DailyRollupFactory.create(client=client, day=TODAY, model="other", cost_usd=Decimal("2"))
    assert _overview().rows[0].raw_usd == Decimal("3")


def test_overview_adds_todays_unpriced_calls_to_the_cached_past_days():
    client = ClientFactory.create()
    for day, events in ((TODAY - dt.timedelta(days=2), 2), (TODAY, 3)):
        DailyRollupFactory.create(
            client=client,
            day=day,
            model="mystery-1",
            events=events,
            unpriced_events=events,
            cost_usd=Decimal("0"),
        )
    DailyRollupFactory.create(client=client, day=TODAY, project="web", events=4)
    data = _overview()
    [row] = data.rows
    assert (row.events, row.unpriced_events, row.untagged_events) == (9, 5, 5)
    assert [(m.model, m.events, m.clients) for m in data.unpriced_models] == [("mystery-1", 5, 1)]


@time_machine.travel(NOON, tick=False)
def test_overview_runs_no_rollup_query_while_the_rollups_are_unchanged(
    django_assert_num_queries,
):
    for _ in range(3):
        DailyRollupFactory.create(client=ClientFactory.create(), day=TODAY)
    _overview()
    # The clients, the rollups' versions, the month's issued invoices.
    with django_assert_num_queries(3):
        _overview()


@time_machine.travel(NOON, tick=False)
def test_overview_shows_a_late_event_as_soon_as_its_day_is_rebuilt():
    client = ClientFactory.create(markup_pct=Decimal("0"))
    UsageEventFactory.create(
        client=client, occurred_at=NOON - dt.timedelta(days=2), cost_usd=Decimal("1")
    )
    _rebuild_rollups()
    assert _overview().rows[0].raw_usd == Decimal("1")
    UsageEventFactory.create(
        client=client, occurred_at=NOON - dt.timedelta(days=2), cost_usd=Decimal("5")
    )
    assert _overview().rows[0].raw_usd == Decimal("1")  # not rolled up yet
    _rebuild_rollups()
    assert _overview().rows[0].raw_usd == Decimal("6")


@time_machine.travel(NOON, tick=False)
def test_overview_sums_are_reused_only_under_the_rollups_version_they_were_read_at():
    """Rows written behind the rebuild's back (no new version) are not read again: the
    sums are keyed by the version, not by time. A rebuild of any day of the month
    (a new version) reads them."""
    client = ClientFactory.create(markup_pct=Decimal("0"))
    DailyRollupFactory.create(client=client, day=TODAY, cost_usd=Decimal("1"))
    assert _overview().rows[0].raw_usd == Decimal("1")
    row = DailyRollup.objects.get()
    DailyRollup.objects.filter(pk=row.pk).update(cost_usd=Decimal("4"), billed_usd=Decimal("4"))
    ModelDailyRollup.objects.filter(day=TODAY).update(
        cost_usd=Decimal("4"), billed_usd=Decimal("4")
    )
    assert _overview().rows[0].raw_usd == Decimal("1")
    month_versions_touch(kind=DataKind.ROLLUPS, days=[TODAY - dt.timedelta(days=9)])
    assert _overview().rows[0].raw_usd == Decimal("4")


def test_overview_sums_of_a_new_day_are_read_again():
    client = ClientFactory.create(markup_pct=Decimal("0"))
    DailyRollupFactory.create(client=client, day=TODAY, cost_usd=Decimal("1"))
    with time_machine.travel(NOON, tick=False) as traveller:
        assert _overview().rows[0].spark[-1] == Decimal("1")
        traveller.shift(dt.timedelta(days=1))
        data = dashboard.overview(Client.objects.all(), now=NOON + dt.timedelta(days=1))
    [row] = data.rows
    assert (row.spark[-2], row.spark[-1], row.raw_usd) == (Decimal("1"), 0, Decimal("1"))


def _top(client, *, compute):
    month = dt.date(2026, 11, 1)
    watermark = dashboard.month_watermark(client, month)
    return dashboard.top_lists(client, month=month, watermark=watermark, compute=compute)


@time_machine.travel(NOON, tick=False)
def test_top_lists_are_computed_only_when_asked_then_reused():
    client = ClientFactory.create()
    UsageEventFactory.create(client=client, end_user="alice")
    _rebuild_rollups()
    assert _top(client, compute=False) is None
    assert [u.name for u in _top(client, compute=True).end_users] == ["alice"]
    UsageEventFactory.create(client=client, end_user="bob", cost_usd=Decimal("5"))
    _rebuild_rollups()
    assert [u.name for u in _top(client, compute=False).end_users] == ["alice"]


def test_top_lists_stay_good_while_the_months_rollups_are_unchanged():
    client = ClientFactory.create(markup_pct=Decimal("0"))
    DailyRollupFactory.create(client=client, day=TODAY)
    with time_machine.travel(NOON, tick=False) as traveller:
        UsageEventFactory.create(client=client, end_user="alice", cost_usd=Decimal("2"))
        UsageEventFactory.create(client=client, prompt_hash="p-1", cost_usd=Decimal("3"))
        _rebuild_rollups()
        _top(client, compute=True)
        traveller.shift(dt.timedelta(hours=2))
        served = _top(client, compute=False)

    assert served is not None
    assert served.computed_at == NOON  # two hours old, and still served
    assert [(u.name, u.events, u.billed_usd) for u in served.end_users] == [
        ("", 1, Decimal("3")),
        ("alice", 1, Decimal("2")),
    ]
    assert [(p.prompt_hash, p.calls, p.raw_usd) for p in served.prompts] == [
        ("p-1", 1, Decimal("3"))
    ]


def test_top_lists_expire_once_rollups_changed_and_the_cache_aged():
    client = ClientFactory.create()
    DailyRollupFactory.create(client=client, day=TODAY)
    with time_machine.travel(NOON, tick=False) as traveller:
        _top(client, compute=True)
        DailyRollupFactory.create(client=client, day=TODAY, model="rebuilt")
        assert _top(client, compute=False) is not None  # recent enough: served as is
        traveller.shift(dt.timedelta(seconds=dashboard.TREND_CACHE_SECONDS + 1))
        assert _top(client, compute=False) is None


def test_month_watermark_matches_the_client_month():
    client = ClientFactory.create()
    DailyRollupFactory.create(client=client, day=TODAY)
    data = dashboard.client_month(client, month=dt.date(2026, 11, 1), today=TODAY)
    assert data.watermark == dashboard.month_watermark(client, dt.date(2026, 11, 1))


def test_overview_months_are_those_of_the_clients_given_with_gaps_and_no_future(
    django_assert_max_num_queries,
):
    """The overview's picker: months with usage of any of the clients, a month without any
    left out, another client's months left out, no future month; read by index probes,
    not a scan of every rollup (a bounded number of queries per month of history)."""
    acme, globex, hidden = ClientFactory.create_batch(3)
    for client, day in [
        (acme, dt.date(2026, 6, 30)),
        (acme, dt.date(2026, 9, 1)),
        (globex, dt.date(2026, 9, 30)),
        (globex, dt.date(2026, 11, 2)),
        (hidden, dt.date(2026, 8, 15)),  # not among the clients asked about
        (acme, dt.date(2027, 1, 5)),  # ahead of the clock
    ]:
        DailyRollupFactory.create(client=client, day=day)
    clients = Client.objects.filter(pk__in=[acme.pk, globex.pk])
    with django_assert_max_num_queries(8):
        months = dashboard.months_with_data(clients, today=TODAY)
    assert months == [dt.date(2026, 11, 1), dt.date(2026, 9, 1), dt.date(2026, 6, 1)]
    assert dashboard.months_with_data(Client.objects.none(), today=TODAY) == []


@time_machine.travel(NOON, tick=False)
def test_overview_refresh_task_sums_once_per_rollups_version(django_assert_num_queries):
    from billing.tasks import overview_refresh_task

    client = ClientFactory.create()
    DailyRollupFactory.create(client=client, day=TODAY)
    assert overview_refresh_task() == 1
    assert overview_refresh_task() == 0
    with django_assert_num_queries(3):  # the page finds the sums the task stored
        _overview()
    DailyRollupFactory.create(client=client, day=TODAY, model="other")
    assert overview_refresh_task() == 1


@pytest.mark.parametrize("month", [None, dt.date(2026, 10, 1)])
def test_overview_row_links_are_those_reverse_gives(month):
    from django.urls import reverse

    from billing.templatetags.dashboard import overview_rows

    for slug in ("acme", "a-b_c-9", "0", "x0"):
        ClientFactory.create(slug=slug)
    rows = _overview().rows
    html = overview_rows(rows, month)
    query = f"?month={month:%Y-%m}" if month else ""
    for row in rows:
        assert f'<a href="{reverse("client_detail", args=[row.client.slug])}{query}">' in html
    assert html.count("<a href=") == 4
