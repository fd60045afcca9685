"""Pixel size of every image packed in a ``.rec``, without decoding the images.

The labels in a detection ``.rec`` are normalised to [0, 1], so the original
image size is not in them; the COCO small/medium/large split needs it (areas
are measured in the image's own pixels). :func:`image_sizes` reads it from the
packed image bytes: the JPEG SOFn segment or the PNG IHDR chunk hold width
and height in their first bytes, which is hundreds of times faster than
decoding. Other formats (BMP, TIFF, ...) fall back to ``cv2.imdecode``.

Order: :func:`image_sizes` returns the sizes in record order, which is the
order ``dataset.iterator.DetRecordIter`` yields images with ``cfg.valid``
(no shuffle; its decoding threads each take a contiguous piece of a chunk and
are concatenated in order). A ``path_imglist`` given to the iterator does
*not* change that order: ``ImageDetRecordIter`` still walks the ``.rec`` and
only looks each record's label up in the list by record id (a list that lacks
an id is an error there). So the sizes line up with the evaluation images
whether or not a list file is used.

The sizes are those of the packed pixel grid: with ``prepare_dataset.py
--resize`` that is the resized image (which is also what the normalised boxes
refer to), and an EXIF orientation tag of a ``--pass-through`` JPEG is
ignored (im2rec's default re-encoding drops EXIF).
"""
from __future__ import annotations

import os
import struct

import cv2
import mxnet as mx
import numpy as np

from config.errors import UserError
from dataset.iterator import _check_record_file

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# SOF0..SOF15 carry the frame size; 0xC4 (DHT), 0xC8 (JPG extension) and 0xCC
# (DAC) share the range but are not frame headers
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# markers without a length field: TEM, RST0-7 (SOI/EOI never appear before SOF)
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])
_JPEG_SOS = 0xDA


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first SOFn segment of JPEG ``data``; None if there is none before the scan."""
    pos, end = 2, len(data)  # past SOI (FF D8)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None  # not at a marker: corrupt, let the decoder judge
        # a marker may be preceded by any number of 0xFF fill bytes
        while pos < end and data[pos] == 0xFF:
            pos += 1
        if pos >= end:
            return None
        marker = data[pos]
        pos += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker == _JPEG_SOS or pos + 2 > end:
            return None  # image data starts: no frame header was found
        (length,) = struct.unpack_from(">H", data, pos)
        if marker in _JPEG_SOF:
            # segment: length (2), precision (1), height (2), width (2)
            if pos + 7 > end:
                return None
            height, width = struct.unpack_from(">HH", data, pos + 3)
            # height 0 means "defined later by a DNL marker": leave it to the decoder
            return (width, height) if width and height else None
        pos += length  # the length counts its own two bytes
    return None


def _png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the IHDR chunk, which PNG requires to come first."""
    # signature (8), chunk length (4), b"IHDR" (4), width (4), height (4), big-endian
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack_from(">II", data, 16)
    return (width, height) if width and height else None


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of encoded image ``data`` read from its JPEG/PNG header; None for other formats.

    None also when the header is damaged; :func:`encoded_size` then decodes.
    """
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    if data[:8] == _PNG_SIGNATURE:
        return _png_size(data)
    return None


def encoded_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of encoded image ``data``: the header if it can be parsed, else ``cv2.imdecode``.

    None when OpenCV cannot decode it either.
    """
    size = header_size(data)
    if size is not None:
        return size
    # IMREAD_UNCHANGED: the stored pixel grid (no EXIF rotation, any depth), as the header parse gives
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        return None
    return int(image.shape[1]), int(image.shape[0])


def _count_idx(idx_path: str) -> int:
    if not os.path.isfile(idx_path):
        raise UserError(f"{idx_path}: index file not found")
    with open(idx_path, encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def image_sizes(rec_path: str, idx_path: str | None = None) -> list[tuple[int, int]]:
    """(width, height) in pixels of every image in ``rec_path``, in record order.

    Returns a list with one entry per record, ``sizes[i]`` for the i-th record
    of the file (= the i-th image ``DetRecordIter`` yields with ``cfg.valid``,
    see the module doc). With ``idx_path`` (the ``.idx`` beside the ``.rec``)
    the record count is checked against it, which also catches a ``.rec`` cut
    off exactly between two records.

    Raises :class:`UserError` naming the file for a missing, truncated or
    non-RecordIO file and for a record whose image cannot be read.
    """
    _check_record_file(rec_path, "record file")
    expected = _count_idx(idx_path) if idx_path else None
    sizes: list[tuple[int, int]] = []
    record = mx.recordio.MXRecordIO(rec_path, "r")
    try:
        while True:
            try:
                packed = record.read()
            except mx.base.MXNetError:
                # dmlc's reader fails a length or magic check on a record cut off mid-way;
                # its message is a C++ trace that says no more than this
                raise UserError(f"{rec_path}: truncated or corrupt at record {len(sizes)} "
                                "(invalid RecordIO framing)") from None
            if packed is None:
                break
            try:
                _, data = mx.recordio.unpack(packed)
            except (struct.error, ValueError):
                raise UserError(f"{rec_path}: record {len(sizes)} has a truncated header") from None
            size = encoded_size(data)
            if size is None:
                raise UserError(f"{rec_path}: record {len(sizes)}: image cannot be read "
                                f"({len(data)} bytes; truncated or not an image)")
            sizes.append(size)
    finally:
        record.close()
    if expected is not None and expected != len(sizes):
        raise UserError(f"{rec_path}: holds {len(sizes)} records but {idx_path} lists {expected}; "
                        "the .rec is truncated or the .idx belongs to another pack")
    return sizes
