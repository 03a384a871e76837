"""The HTTP library that comes with the installed ``anthropic``: httpx2 (anthropic 2.x) or httpx."""

from __future__ import annotations

try:
    import httpx2 as httpx
except ImportError:  # anthropic 1.x and older ship httpx under its own name
    import httpx  # type: ignore[no-redef]

__all__ = ["httpx"]
