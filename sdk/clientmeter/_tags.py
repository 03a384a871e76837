"""Tags (project, feature, user, team…) set per block with contextvars or per client."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field

# The optional string fields of an ingest event that a tag may set.
TAG_FIELDS = ("project", "feature", "user", "team", "deploy_sha", "prompt_hash")


@dataclass(frozen=True)
class Tags:
    """Tag values and metadata; ``merged`` lets the more specific set win field by field."""

    values: Mapping[str, str] = field(default_factory=dict)
    metadata: Mapping[str, str] = field(default_factory=dict)

    def merged(self, other: Tags) -> Tags:
        if not other.values and not other.metadata:
            return self
        return Tags(
            values={**self.values, **other.values},
            metadata={**self.metadata, **other.metadata},
        )


EMPTY = Tags()

_current: ContextVar[Tags] = ContextVar("clientmeter_tags", default=EMPTY)


def make_tags(
    *,
    project: str | None = None,
    feature: str | None = None,
    user: str | None = None,
    team: str | None = None,
    deploy_sha: str | None = None,
    prompt_hash: str | None = None,
    metadata: Mapping[str, object] | None = None,
) -> Tags:
    given = {
        "project": project,
        "feature": feature,
        "user": user,
        "team": team,
        "deploy_sha": deploy_sha,
        "prompt_hash": prompt_hash,
    }
    return Tags(
        values={key: str(value) for key, value in given.items() if value is not None},
        metadata={str(key): str(value) for key, value in (metadata or {}).items()},
    )


def current() -> Tags:
    return _current.get()


@contextlib.contextmanager
def tags(
    *,
    project: str | None = None,
    feature: str | None = None,
    user: str | None = None,
    team: str | None = None,
    deploy_sha: str | None = None,
    prompt_hash: str | None = None,
    metadata: Mapping[str, object] | None = None,
) -> Iterator[Tags]:
    """Tag every call made inside the block (this thread or asyncio task only).

    Blocks nest: an inner block overrides the outer one field by field, metadata keys merge.
    """
    block = make_tags(
        project=project,
        feature=feature,
        user=user,
        team=team,
        deploy_sha=deploy_sha,
        prompt_hash=prompt_hash,
        metadata=metadata,
    )
    merged = _current.get().merged(block)
    token = _current.set(merged)
    try:
        yield merged
    finally:
        _current.reset(token)
