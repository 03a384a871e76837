"""The PDF renderer: prepared once per process, and it never fetches from the network."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from billing.pdf import pdf_renderer

# A 1×1 PNG.
PIXEL = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cf000000030101005e3a4ad90000000049454e44ae426082"
)


def test_the_renderer_is_prepared_once_per_process():
    assert pdf_renderer() is pdf_renderer()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/logo.png",
        "https://example.com/logo.png",
        "ftp://example.com/logo.png",
        "file:///etc/passwd",
    ],
)
def test_the_fetcher_refuses_the_network_and_files_outside_storage(url):
    with pytest.raises(ValueError, match="fetches nothing"):
        pdf_renderer().fetcher.fetch(url)


def test_a_document_with_remote_images_renders_without_opening_a_socket(monkeypatch):
    opened: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        opened.append(address)
        raise OSError("no network in a PDF")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    html = (
        '<html><head><link rel="stylesheet" href="http://127.0.0.1:9/x.css"></head><body>'
        '<img src="http://127.0.0.1:9/logo.png"><p style="background: url(https://example.com/b.png)">'
        "Invoice</p></body></html>"
    )
    document = pdf_renderer().document(html)
    assert len(document.pages) == 1
    assert document.write_pdf().startswith(b"%PDF")
    assert opened == []


def test_a_logo_in_storage_and_data_urls_are_read(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    name = default_storage.save("agency/logo.png", ContentFile(PIXEL))
    path = Path(default_storage.path(name))
    renderer = pdf_renderer()
    response = renderer.fetcher.fetch(path.as_uri())
    assert response is not None
    assert renderer.fetcher.fetch("data:text/plain,hi") is not None
