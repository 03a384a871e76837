"""manage.py backfill_usage: a CSV export through the same ingest service."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import time_machine
from django.core.management import CommandError, call_command

from tests.factories import new_client
from tracking.models import UsageEvent

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _frozen():
    with time_machine.travel(NOW, tick=False):
        yield


def write_csv(tmp_path: Path, text: str) -> str:
    path = tmp_path / "export.csv"
    path.write_text(text)
    return str(path)


FLAT = """id,occurred_at,model,project,usage.input_tokens,usage.output_tokens
r1,2026-06-01T10:00:00Z,claude-sonnet-4-5,support-bot,1200,450
r2,2026-06-02T10:00:00Z,claude-sonnet-4-5,,1000,0
"""


def test_backfill_stores_old_rows_for_the_client(rates, tmp_path, capsys):
    acme = new_client(slug="acme")
    call_command("backfill_usage", write_csv(tmp_path, FLAT), "--client", "acme")
    assert capsys.readouterr().out.strip() == "2 accepted, 0 duplicates, 0 rejected"
    first = UsageEvent.objects.get(client=acme, event_id="r1")
    assert first.cost_usd == Decimal("0.01035")
    assert first.project is not None
    assert first.project.name == "support-bot"


def test_running_a_backfill_twice_records_nothing_new(rates, tmp_path, capsys):
    new_client(slug="acme")
    path = write_csv(tmp_path, FLAT)
    call_command("backfill_usage", path, "--client", "acme")
    capsys.readouterr()
    call_command("backfill_usage", path, "--client", "acme")
    assert capsys.readouterr().out.strip() == "0 accepted, 2 duplicates, 0 rejected"
    assert UsageEvent.objects.count() == 2


def test_usage_json_column_is_taken_as_is(rates, tmp_path):
    acme = new_client(slug="acme")
    text = (
        "id,occurred_at,provider,model,usage\n"
        'o1,2026-11-20T10:00:00Z,openai,gpt-4.1,"{""prompt_tokens"": 100, '
        '""completion_tokens"": 20, ""prompt_tokens_details"": {""cached_tokens"": 0}}"\n'
    )
    call_command("backfill_usage", write_csv(tmp_path, text), "--client", "acme")
    stored = UsageEvent.objects.get(client=acme)
    assert stored.usage["prompt_tokens_details"] == {"cached_tokens": 0}
    assert (stored.input_tokens, stored.output_tokens) == (100, 20)


def test_agency_backfill_takes_the_client_column(rates, tmp_path):
    acme, globex = new_client(slug="acme"), new_client(slug="globex")
    text = (
        "id,client,occurred_at,model,usage.input_tokens,usage.output_tokens\n"
        "a,acme,2026-11-20T10:00:00Z,claude-sonnet-4-5,10,10\n"
        "a,globex,2026-11-20T10:00:00Z,claude-sonnet-4-5,10,10\n"
    )
    call_command("backfill_usage", write_csv(tmp_path, text))
    assert UsageEvent.objects.filter(client__in=[acme, globex]).count() == 2


def test_rejected_rows_are_listed_by_line_and_fail_the_command(rates, tmp_path, capsys):
    new_client(slug="acme")
    text = FLAT + "r3,2026-06-03T10:00:00Z,claude-sonnet-4-5,,-5,1\n"
    with pytest.raises(CommandError, match="1 rows rejected"):
        call_command("backfill_usage", write_csv(tmp_path, text), "--client", "acme")
    captured = capsys.readouterr()
    assert "line 4: usage.input_tokens: must be a non-negative integer" in captured.err
    assert UsageEvent.objects.count() == 2


def test_client_backfill_refuses_rows_of_another_client(rates, tmp_path, capsys):
    new_client(slug="acme")
    globex = new_client(slug="globex")
    text = (
        "id,client,occurred_at,model,usage.input_tokens,usage.output_tokens\n"
        "a,globex,2026-11-20T10:00:00Z,claude-sonnet-4-5,10,10\n"
    )
    with pytest.raises(CommandError, match=r"^1 rows rejected \(listed above\)$"):
        call_command("backfill_usage", write_csv(tmp_path, text), "--client", "acme")
    assert capsys.readouterr().err == "line 2: client: this key may only post for its own client\n"
    assert not UsageEvent.objects.filter(client=globex).exists()


def test_unknown_client_slug_is_an_error(tmp_path):
    with pytest.raises(CommandError, match="no client"):
        call_command("backfill_usage", write_csv(tmp_path, FLAT), "--client", "nobody")


def test_csv_without_id_column_is_an_error(tmp_path):
    new_client(slug="acme")
    with pytest.raises(CommandError, match="id column"):
        call_command("backfill_usage", write_csv(tmp_path, "model\nx\n"), "--client", "acme")


@pytest.mark.parametrize("number", ["NaN", "Infinity", "1e400"])
def test_a_usage_cell_that_is_not_standard_json_is_rejected_with_its_row(
    rates, tmp_path, capsys, number
):
    # Python's json reads NaN and 1e400 (as inf), which no column can hold: such a row
    # broke the whole chunk's insert on PostgreSQL.
    acme = new_client(slug="acme")
    text = (
        "id,occurred_at,model,usage\n"
        'ok,2026-11-20T10:00:00Z,claude-sonnet-4-5,"{""input_tokens"": 1, ""output_tokens"": 1}"\n'
        f'bad,2026-11-20T10:00:00Z,claude-sonnet-4-5,"{{""input_tokens"": 1, ""output_tokens"": 1, ""x"": {number}}}"\n'
    )
    with pytest.raises(CommandError, match="1 rows rejected"):
        call_command("backfill_usage", write_csv(tmp_path, text), "--client", "acme")
    assert "line 3: usage: must be an object" in capsys.readouterr().err
    assert list(UsageEvent.objects.filter(client=acme).values_list("event_id", flat=True)) == ["ok"]
