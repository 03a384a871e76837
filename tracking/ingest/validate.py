"""Step 1: the request body and each event against the declared ``Event`` shape.

An event is converted to ``tracking.schema.Event`` by msgspec. Only when that fails is the
event looked at field by field, in declaration order, to name the first bad field and say
what is wrong with it; a valid event costs one C call. Then come the checks no JSON
Schema keyword expresses: the raw ``usage`` and ``metadata`` objects must be storable (no
NUL, at most 16 KiB, at most 8 levels deep) and ``occurred_at`` a real instant.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import types
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Union, get_args, get_origin

import msgspec
from django.conf import settings

from tracking.ingest.results import EventOutcome, RequestError
from tracking.schema import (
    MAX_JSON_BYTES,
    MAX_JSON_DEPTH,
    NUL_MESSAGE,
    STORABLE,
    Event,
    IngestRequest,
)
from tracking.services import json_sorted

_BAD_CHARS = re.compile("[\x00\ud800-\udfff]")
_FRACTION_DIGITS = re.compile(r"(\.\d{6})\d+")
_decode = msgspec.json.Decoder().decode
_decode_request = msgspec.json.Decoder(IngestRequest).decode


def _without_storable(annotation: Any) -> Any:
    """``annotation`` with each ``pattern=STORABLE`` constraint taken out, the rest kept."""
    origin = get_origin(annotation)
    if origin is Annotated:
        inner, *extras = get_args(annotation)
        kept = [_meta_without_storable(m) if isinstance(m, msgspec.Meta) else m for m in extras]
        return Annotated[(_without_storable(inner), *kept)]
    if origin in (Union, types.UnionType):
        return Union[tuple(_without_storable(a) for a in get_args(annotation))]  # noqa: UP007
    if origin is dict:
        key, value = get_args(annotation)
        return dict[_without_storable(key), _without_storable(value)]  # type: ignore[misc]
    return annotation


def _meta_without_storable(meta: msgspec.Meta) -> msgspec.Meta:
    return msgspec.Meta(
        **{
            name: value
            for name in _ALL_META_KEYS
            if (value := getattr(meta, name)) is not None
            and not (name == "pattern" and value == STORABLE)
        }
    )


_ALL_META_KEYS = (
    "gt", "ge", "lt", "le", "multiple_of", "pattern", "min_length", "max_length", "tz",
    "title", "description", "examples", "extra_json_schema", "extra",
)  # fmt: skip

# ``Event`` as declared but for its STORABLE patterns, for a body that holds no ``\u``
# escape: in JSON text a NUL or a lone surrogate can only be written as one (msgspec
# refuses raw control bytes and invalid UTF-8), so no string of such a body can hold
# either, and the patterns, run by Python's ``re`` once per string, need not run: they
# were 1.3 of the 1.7 ms msgspec took to decode a 500-event body (measured). A subclass,
# so that it is an ``Event`` wherever one is expected.
CleanEvent = msgspec.defstruct(
    "CleanEvent",
    [
        (f.name, _without_storable(f.type))
        if f.required
        else (f.name, _without_storable(f.type), f.default)
        for f in msgspec.structs.fields(Event)
    ],
    bases=(Event,),
    module=__name__,
)
_decode_clean_request = msgspec.json.Decoder(
    msgspec.defstruct(
        "CleanIngestRequest",
        [("events", Annotated[list[CleanEvent], msgspec.Meta(min_length=1)])],  # type: ignore[valid-type]
        module=__name__,
    )
).decode


@dataclass(slots=True)
class ValidEvent:
    index: int
    event: Event
    occurred_at: datetime | None
    # The usage object as compact JSON with sorted keys, encoded once for its size, the
    # fingerprint and the row.
    usage_text: bytes


class _Invalid(Exception):
    def __init__(self, where: str, message: str, code: str = "invalid") -> None:
        super().__init__(message)
        self.where = where
        self.message = message
        self.code = code


def parse_events_body(body: bytes) -> list[Any]:
    """The ``events`` list of a request body, or RequestError (400/413).

    When the whole body fits the declaration (the common case) it is decoded and validated
    in one C pass and the events come back as ``Event`` structs (``CleanEvent`` ones for a
    body without ``\\u`` escapes); otherwise as raw JSON values, for ``events_validate`` to
    judge one by one. Strict JSON: NaN, Infinity and numbers that overflow a float are
    refused, as is nesting deep enough to exhaust the stack.
    """
    decode: Callable[[bytes], Any] = _decode_request if b"\\u" in body else _decode_clean_request
    try:
        events: list[Any] = decode(body).events
    except (msgspec.DecodeError, RecursionError):
        events = _envelope(_json(body))
    if len(events) > settings.INGEST_MAX_EVENTS:
        raise RequestError(
            413,
            "too_many_events",
            f"At most {settings.INGEST_MAX_EVENTS} events per request (got {len(events)}).",
            field="events",
        )
    return events


def _envelope(data: Any) -> list[Any]:
    if not isinstance(data, dict) or "events" not in data:
        raise RequestError(400, "invalid_body", 'The body must be {"events": [...]}.')
    events = data["events"]
    if not isinstance(events, list):
        raise RequestError(400, "invalid_body", "events must be a list.", field="events")
    if not events:
        raise RequestError(400, "invalid_body", "events must not be empty.", field="events")
    return events


def _json(body: bytes) -> Any:
    try:
        return _decode(body)
    except (msgspec.DecodeError, RecursionError):
        pass
    # msgspec refuses some JSON the standard library reads: a lone surrogate escape, an
    # integer past 64 bits, a UTF-8 byte-order mark. Those are one event's fault (the NUL
    # check, the token cap), not a broken body; the standard library also words the error.
    try:
        return strict_json_loads(body)
    except (ValueError, RecursionError) as exc:
        raise RequestError(400, "malformed_json", f"The body is not valid JSON: {exc}") from None


def strict_json_loads(text: str | bytes) -> Any:
    """``json.loads`` without its extensions: NaN, Infinity and numbers that overflow a
    float are ValueError, as in the JSON standard (no column could store them)."""
    return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


def events_validate(events: list[Any], outcomes: list[EventOutcome]) -> list[ValidEvent]:
    """The events that fit the declared shape; each other one is rejected with its field.

    ``events`` are raw JSON values, or ``Event`` structs ``parse_events_body`` already
    validated against the declaration.
    """
    valid = []
    for index, raw in enumerate(events):
        try:
            event = raw if isinstance(raw, Event) else _convert(raw, f"events[{index}]")
            clean = type(event) is CleanEvent
            usage_text = _storable_json(event.usage, index, "usage", clean=clean)
            if event.metadata:
                _storable_json(event.metadata, index, "metadata", clean=clean)
            valid.append(ValidEvent(index, event, _instant(event.occurred_at, index), usage_text))
        except _Invalid as exc:
            outcomes[index].reject(exc.where, exc.message, exc.code)
    return valid


def _convert(raw: Any, path: str) -> Event:
    if not isinstance(raw, dict):
        raise _Invalid(path, "must be an object")
    try:
        return msgspec.convert(raw, Event)
    # A lone surrogate (JSON "\ud800") where msgspec compares text as UTF-8 (a Literal, a
    # bool, an int, an unknown key) raises UnicodeEncodeError rather than a ValidationError.
    except (msgspec.ValidationError, UnicodeEncodeError) as exc:
        for name, annotation, required in _EVENT_FIELDS:
            value = raw.get(name)
            if value is None and required:
                raise _Invalid(f"{path}.{name}", "is required", "required") from None
            if (value is not None or name in raw) and _refuses(annotation, value):
                raise _Invalid(*_explain(f"{path}.{name}", value, annotation)) from None
        if isinstance(exc, UnicodeEncodeError):  # in an unknown key: the event as a whole
            raise _Invalid(path, NUL_MESSAGE) from None
        raise _Invalid(path, str(exc)) from None


_EVENT_FIELDS = [(f.name, f.type, f.required) for f in msgspec.structs.fields(Event)]


def _refuses(annotation: Any, value: Any) -> bool:
    try:
        msgspec.convert(value, annotation)
    except (msgspec.ValidationError, UnicodeEncodeError):
        return True
    return False


def _explain(where: str, value: Any, annotation: Any) -> tuple[str, str]:
    """Where and why ``value`` fails ``annotation``: the declared ``message`` if it has one,
    else words for the constraint it breaks."""
    kind, meta = _unwrap(annotation)
    if _unstorable(value, kind, meta):
        return where, NUL_MESSAGE
    if meta is not None and meta.extra and "message" in meta.extra:
        return where, meta.extra["message"]
    if get_origin(kind) is dict:
        return _explain_object(where, value, kind, meta)
    if kind is str:
        if not isinstance(value, str):
            return where, "must be a string"
        return where, f"must be at most {meta.max_length if meta else 0} characters"
    if kind is int and type(value) is int and meta and meta.le is not None and value > meta.le:
        return where, f"must be at most {meta.le}"
    if kind is int:
        return where, "must be a non-negative integer"
    if kind is bool:
        return where, "must be true or false"
    return where, "is not valid"


def _explain_object(
    where: str, value: Any, kind: Any, meta: msgspec.Meta | None
) -> tuple[str, str]:
    if not isinstance(value, dict):
        return where, "must be an object"
    if meta is not None and meta.max_length is not None and len(value) > meta.max_length:
        return where, f"must have at most {meta.max_length} keys"
    key_type, value_type = get_args(kind)
    for key, item in value.items():
        if _refuses(key_type, key):
            return _explain(where, key, key_type)
        if _refuses(value_type, item):
            # A character the database cannot store is reported at the object, like a key.
            if isinstance(item, str) and _BAD_CHARS.search(item):
                return where, NUL_MESSAGE
            return _explain(f"{where}.{key}", item, value_type)
    return where, "is not valid"


def _unwrap(annotation: Any) -> tuple[Any, msgspec.Meta | None]:
    """The type inside ``X | None`` and ``Annotated[X, Meta(...)]``, and its merged Meta."""
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    metas: list[msgspec.Meta] = []
    while get_origin(annotation) is Annotated:
        annotation, *extras = get_args(annotation)
        metas[:0] = [m for m in extras if isinstance(m, msgspec.Meta)]
    merged: dict[str, Any] = {}
    for meta in metas:
        merged.update({k: getattr(meta, k) for k in _META_KEYS if getattr(meta, k) is not None})
    return annotation, msgspec.Meta(**merged) if merged else None


_META_KEYS = ("min_length", "max_length", "pattern", "ge", "le", "extra")


def _unstorable(value: Any, kind: Any, meta: msgspec.Meta | None) -> bool:
    """A string that meets its length limits and fails only for a character PostgreSQL
    cannot store: that message, rather than the field's usual one, says what to fix."""
    if kind is not str or meta is None or meta.pattern != STORABLE or not isinstance(value, str):
        return False
    short_enough = meta.max_length is None or len(value) <= meta.max_length
    return short_enough and len(value) >= (meta.min_length or 0) and bool(_BAD_CHARS.search(value))


def _storable_json(value: dict[str, Any], index: int, name: str, *, clean: bool) -> bytes:
    """A raw JSON object is kept as sent: refuse a NUL anywhere, too deep, or too big.
    Its JSON text (sorted keys, compact) is returned.

    ``clean``: from a body without escapes (``CleanEvent``), so no string in it can hold
    a NUL or a lone surrogate, and it is walked only if its text has more than
    ``MAX_JSON_DEPTH`` brackets in all (fewer cannot nest that deep): a usage object is
    mostly token counts, and the walk was ~0.7 ms a 500-event batch.
    """
    text = b""
    if clean:
        with contextlib.suppress(RecursionError):  # nested far too deep: the walk says so
            text = json_sorted(value)
    if not text or text.count(b"{") + text.count(b"[") > MAX_JSON_DEPTH:
        try:
            below = _unstorable_at(value, 1)
        except _TooDeep:
            message = f"must be at most {MAX_JSON_DEPTH} levels deep"
            raise _Invalid(f"events[{index}].{name}", message) from None
        if below is not None:
            raise _Invalid(f"events[{index}].{name}{below}", NUL_MESSAGE)
        text = text or json_sorted(value)
    if len(text) > MAX_JSON_BYTES:
        message = f"must be at most {MAX_JSON_BYTES} bytes as JSON"
        raise _Invalid(f"events[{index}].{name}", message)
    return text


class _TooDeep(Exception):
    pass


def _unstorable_at(value: dict[str, Any] | list[Any], depth: int) -> str | None:
    """Where below ``value`` a key or string holds a character PostgreSQL cannot store
    ("" for a key of ``value`` itself), or None; _TooDeep past the depth limit.

    Numbers, booleans and nulls are skipped without a call, and a path is built only for
    a fault: a usage object is mostly token counts, and the old per-value recursion with
    path strings was ~10% of a batch's CPU.
    """
    if depth > MAX_JSON_DEPTH:
        raise _TooDeep
    if isinstance(value, dict):
        for key, item in value.items():
            if _BAD_CHARS.search(key):
                return ""
            if isinstance(item, str):
                if _BAD_CHARS.search(item):
                    return f".{key}"
            elif isinstance(item, (dict, list)):
                below = _unstorable_at(item, depth + 1)
                if below is not None:
                    return f".{key}{below}"
        return None
    for index, item in enumerate(value):
        if isinstance(item, str):
            if _BAD_CHARS.search(item):
                return f"[{index}]"
        elif isinstance(item, (dict, list)):
            below = _unstorable_at(item, depth + 1)
            if below is not None:
                return f"[{index}]{below}"
    return None


def _instant(value: str | None, index: int) -> datetime | None:
    """``occurred_at`` (already RFC 3339 by its pattern) as an aware UTC datetime."""
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value).astimezone(UTC)
    except (ValueError, OverflowError):
        pass
    try:
        # Older Pythons take at most 6 fractional digits (nanoseconds are cut, not
        # rounded), and none takes the lowercase "z" RFC 3339 allows.
        text = _FRACTION_DIGITS.sub(r"\1", value).upper()
        return datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError):
        raise _Invalid(f"events[{index}].occurred_at", "is not a valid date-time") from None
