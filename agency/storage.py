"""Private file storage: files on disk that no URL serves (invoice PDFs).

Its root (PRIVATE_STORAGE_ROOT) lies outside MEDIA_ROOT and STATIC_ROOT, so neither the
development media route nor a web server publishing those folders can reach it. Files are
read only by views that check who asks; asking for a URL is a programming error.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.files.storage import FileSystemStorage
from django.core.signals import setting_changed
from django.utils.deconstruct import deconstructible
from django.utils.functional import cached_property


@deconstructible(path="agency.storage.PrivateStorage")
class PrivateStorage(FileSystemStorage):
    """FileSystemStorage rooted at PRIVATE_STORAGE_ROOT (read when first used, and again
    after a test changes the setting), without URLs."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        setting_changed.connect(self._root_changed)

    @cached_property
    def base_location(self) -> Any:
        return settings.PRIVATE_STORAGE_ROOT

    def _root_changed(self, setting: str, **kwargs: Any) -> None:
        if setting == "PRIVATE_STORAGE_ROOT":
            self.__dict__.pop("base_location", None)
            self.__dict__.pop("location", None)

    def url(self, name: str | None) -> str:
        raise ValueError(
            f"{name} is a private file and has no URL: link to the view that serves it"
        )
