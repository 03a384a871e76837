"""What the fuzz tests throw: hostile values, months, query strings, and the example budget.

The budget is fixed so that CI always runs the same examples in about the same time:
each test says how many examples it runs (``fuzz_settings(n)``), and examples are
derived from the test's name (``derandomize``), not drawn at random. To search harder,
multiply the budget and draw fresh examples at random each run:

    CLIENTMETER_FUZZ_SCALE=20 CLIENTMETER_FUZZ_RANDOM=1 bin/test tests/fuzz
"""

from __future__ import annotations

import json
import os
import re
from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

SCALE = max(1, int(os.environ.get("CLIENTMETER_FUZZ_SCALE", "1")))
RANDOM = os.environ.get("CLIENTMETER_FUZZ_RANDOM", "") not in ("", "0")

settings.register_profile(
    "clientmeter-fuzz",
    derandomize=not RANDOM,
    # No example database: a fixed run is the same run everywhere; a random one prints its
    # failing example (and the seed) for a focused test.
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[
        # One database and test client per test, shared by its examples on purpose: every
        # example counts rows before and after itself.
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
PROFILE = settings.get_profile("clientmeter-fuzz")


def fuzz_settings(examples: int) -> settings:
    """The settings of a fuzz test that runs ``examples`` examples (times the scale)."""
    return settings(PROFILE, max_examples=examples * SCALE)


# --- values --------------------------------------------------------------------------

# Replaced, after json.dumps, by raw tokens no Python value encodes to: strict JSON has
# none of them, and a float column could not store them.
RAW_TOKENS = {
    "@@nan@@": "NaN",
    "@@inf@@": "Infinity",
    "@@-inf@@": "-Infinity",
    "@@1e999@@": "1e999",
    "@@-1e999@@": "-1e999",
    "@@leading0@@": "007",
    "@@hugeint@@": "9" * 400,
    "@@hex@@": "0x10",
}
_RAW = re.compile("|".join(re.escape(f'"{marker}"') for marker in RAW_TOKENS))


def encode(value: Any) -> bytes:
    """JSON for ``value``, with each raw-token marker swapped for its token."""
    text = json.dumps(value, ensure_ascii=True)
    return _RAW.sub(lambda m: RAW_TOKENS[m.group(0)[1:-1]], text).encode()


def nested(levels: int, *, as_list: bool = False) -> Any:
    value: Any = [] if as_list else {}
    for _ in range(levels - 1):
        value = [value] if as_list else {"a": value}
    return value


ODD_STRINGS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",
    "\udfff",
    "\ufeff",
    "\u202e\u202d",
    "🙂" * 70,
    "é" * 129,
    "x" * 17,
    "x" * 33,
    "x" * 65,
    "x" * 129,
    "x" * 201,
    "x" * 5000,
    "null",
    "NaN",
    "-1",
    "1e999",
    "<script>alert(1)</script>",
    "'; DROP TABLE tracking_usageevent; --",
    "../../etc/passwd",
    "%00%ff",
    "\r\n\tX-Injected: 1",
]

odd_text = st.one_of(
    st.sampled_from(ODD_STRINGS),
    # Every code point, lone surrogates included (JSON escapes them as \ud800).
    st.text(st.characters(exclude_categories=()), max_size=40),
    st.integers(min_value=1, max_value=20_000).map(lambda n: "y" * n),
)

odd_numbers = st.one_of(
    st.sampled_from([0, -1, 1, 2**31 - 1, 2**31, 2**63 - 1, 2**63, 2**64, -(2**63) - 1]),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(list(RAW_TOKENS)),
    st.sampled_from([0.5, 1.0, 1e308, -0.0, 100_000_001]),
)

json_scalars = st.one_of(st.none(), st.booleans(), odd_numbers, odd_text)
any_json = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(odd_text, inner, max_size=4)
    ),
    max_leaves=12,
)
deep = st.builds(nested, st.integers(min_value=1, max_value=1200), as_list=st.booleans())
hostile_value = st.one_of(json_scalars, any_json, deep)

# --- months, ids and query strings ----------------------------------------------------

ODD_MONTHS = [
    "0000-00",
    "0001-01",
    "1999-12",
    "2000-01",
    "2026-00",
    "2026-13",
    "2026-1",
    "2026-011",
    "2026-10",
    "2026-11",
    "2026-12",
    "2100-12",
    "2101-01",
    "9999-12",
    "10000-01",
    "-2026-11",
    "+2026-11",
    " 2026-11 ",
    "2026-11\n",
    "2026-11\x00",
    "２０２６-１１",
    "٢٠٢٦-١١",
    "2026/11",
    "2026-11-01",
    "NaN",
    "",
]
months = st.one_of(st.sampled_from(ODD_MONTHS), odd_text)

PERCENT_JUNK = ["%", "%%", "%zz", "%ff%fe", "%00", "%C0%AF", "%E0%A4%A", "%u0041", "%2e%2e%2f"]


def query_value(text: str) -> str:
    """``text`` percent-encoded as a browser would, or one of the raw junk escapes."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def query_string(pairs: list[tuple[str, str]], junk: list[str]) -> str:
    parts = [f"{query_value(name)}={query_value(value)}" for name, value in pairs]
    return "&".join(parts + junk)


def queries(names: list[str], values: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Query strings of the given parameters (repeated, misspelt, missing) and junk."""
    name = st.one_of(st.sampled_from(names), odd_text)
    pairs = st.lists(st.tuples(name, values), max_size=4)
    junk = st.lists(st.sampled_from([*PERCENT_JUNK, "&", "=", "==", "a=%", "month"]), max_size=3)
    return st.builds(query_string, pairs, junk)
