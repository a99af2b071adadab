"""The images of a finished prompt: downloaded (again when a download is cut short) and
checked, all of them or :class:`~comfyline.errors.ImageInvalid`."""

from __future__ import annotations

import asyncio

from comfyline.comfy.prompts import PromptBook
from comfyline.comfy.protocol import ImageRef
from comfyline.errors import DownloadCutShort, ImageInvalid
from comfyline.generation import GeneratedImage, GenerationRequest
from comfyline.images import check_image
from comfyline.workflows import Graph, output_size

__all__ = ["DOWNLOAD_TRIES", "fetch_images"]

DOWNLOAD_TRIES = 3
"""How often an image download cut short is tried in all before the image counts as bad."""


async def fetch_images(
    book: PromptBook,
    request: GenerationRequest,
    refs: list[ImageRef],
    graph: Graph,
    *,
    keep_pictures: bool = False,
) -> list[GeneratedImage]:
    """Download and check every image of a prompt: all good, or :class:`ImageInvalid`.
    ``keep_pictures``: each keeps the picture the check decoded (``picture``)."""
    wanted = request.params.batch_size
    if len(refs) != wanted:
        saved = "no image" if not refs else f"{len(refs)} images"
        raise ImageInvalid(
            f"the server saved {saved} for a prompt that makes {wanted} (batch size "
            f"{wanted}); does the workflow end in exactly one SaveImage node?"
        )
    expected = output_size(graph)
    fetched = []
    for ref in refs:
        data = await _download(book, ref)
        source = f"{ref.subfolder}/{ref.filename}".lstrip("/")
        picture = await asyncio.to_thread(check_image, data, expected_size=expected, source=source)
        fetched.append(
            GeneratedImage(
                data,
                picture.width,
                picture.height,
                ref.filename,
                ref.subfolder,
                picture=picture if keep_pictures else None,
            )
        )
    return fetched


async def _download(book: PromptBook, ref: ImageRef) -> bytes:
    """One image's bytes; a download cut short is fetched again (the file is whole on the
    server), :data:`DOWNLOAD_TRIES` times at most."""
    timeout_s = book.endpoint.download_timeout_s
    for attempt in range(1, DOWNLOAD_TRIES + 1):
        try:
            return await book.retrying(lambda: book.client.view(ref, timeout_s=timeout_s))
        except DownloadCutShort:
            if attempt == DOWNLOAD_TRIES:
                raise
    raise AssertionError("unreachable")  # pragma: no cover
