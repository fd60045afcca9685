"""RecordIO, the one module that reads the format: framing, the label scan, byte offsets, image sizes.

The format: every record starts with the magic ``0xCED7230A`` and a 32-bit
word holding a continuation flag (top 3 bits) and the length (low 29 bits);
the payload is padded to 4 bytes. ``mx.recordio`` packs an ``IRHeader``
(flag, label, id, id2) before the image bytes; a detection label is
``[header_width, object_width, header..., objects...]``.

:func:`record_offsets` and :func:`shard_sizes` give the byte offsets and the
shards a distributed job's workers read (``num_parts``/``part_index``).

:func:`scan_labels` runs before training and evaluation start: a ``.rec`` cut
mid-record, an ``.idx`` that disagrees with it, or a class id that the
network has no output for is a one-line error naming the file, rather than a
C++ trace (or silent garbage) epochs later.

Pixel size of every image packed in a ``.rec``, without decoding the images:

The labels in a detection ``.rec`` are normalised to [0, 1], so the original
image size is not in them; the COCO small/medium/large split needs it (areas
are measured in the image's own pixels). :func:`image_sizes` reads it from the
packed image bytes: the JPEG SOFn segment or the PNG IHDR chunk hold width
and height in their first bytes, which is hundreds of times faster than
decoding. Other formats (BMP, TIFF, ...) fall back to ``cv2.imdecode``.

Order: :func:`image_sizes` returns the sizes in record order, which is the
order ``dataset.iterator.DetRecordIter`` yields images with ``VALIDATION``
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
from collections.abc import Iterator
from typing import NamedTuple

import cv2
import mxnet as mx
import numpy as np

from config.errors import UserError

RECORDIO_MAGIC = 0xCED7230A
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


def iter_records(rec_path: str, idx_path: str | None = None) -> Iterator[tuple]:
    """``(header, image bytes)`` of every record of ``rec_path`` in order.

    Raises :class:`UserError` naming the file for a missing, truncated or
    non-RecordIO file; with ``idx_path`` (the ``.idx`` beside the ``.rec``)
    also when the record count disagrees with it, which catches a ``.rec``
    cut off exactly between two records or an ``.idx`` of another pack.
    """
    check_record_file(rec_path, "record file")
    expected = _count_idx(idx_path) if idx_path else None
    count = 0
    record = mx.recordio.MXRecordIO(rec_path, "r")
    try:
        while True:
            try:
                packed = record.read()
            except mx.base.MXNetError:
                # dmlc's reader fails a length or magic check on a record cut off mid-way;
                # its message is a C++ trace that says no more than this
                raise UserError(f"{rec_path}: truncated or corrupt at record {count} "
                                "(invalid RecordIO framing)") from None
            if packed is None:
                break
            try:
                header, data = mx.recordio.unpack(packed)
            except (struct.error, ValueError):
                raise UserError(f"{rec_path}: record {count} has a truncated header") from None
            yield header, data
            count += 1
    finally:
        record.close()
    if expected is not None and expected != count:
        raise UserError(f"{rec_path}: holds {count} records but {idx_path} lists {expected}; "
                        "the .rec is truncated or the .idx belongs to another pack")


def image_sizes(rec_path: str, idx_path: str | None = None) -> list[tuple[int, int]]:
    """(width, height) in pixels of every image in ``rec_path``, in record order.

    Returns a list with one entry per record, ``sizes[i]`` for the i-th record
    of the file (= the i-th image ``DetRecordIter`` yields with ``VALIDATION``,
    see the module doc). Errors as :func:`iter_records`, and for a record
    whose image cannot be read.
    """
    sizes: list[tuple[int, int]] = []
    for _, data in iter_records(rec_path, idx_path):
        size = encoded_size(data)
        if size is None:
            raise UserError(f"{rec_path}: record {len(sizes)}: image cannot be read "
                            f"({len(data)} bytes; truncated or not an image)")
        sizes.append(size)
    return sizes


def _list_labels(list_path: str) -> Iterator[np.ndarray]:
    """The label columns of each line of a detection ``.lst`` (index, label..., path)."""
    with open(list_path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.strip().split("\t")
            if not line.strip():
                continue
            try:
                yield np.array([float(v) for v in fields[1:-1]], dtype=np.float32)
            except ValueError:
                raise UserError(f"{list_path}: line {number} is not a detection list line") from None


def detection_objects(label, rec_path: str, number: int) -> np.ndarray:
    """Record ``number``'s packed label ``[header_width, object_width, header..., objects...]`` as ``[n, 6]``
    rows ``(cls, xmin, ymin, xmax, ymax, difficult)``: padding rows (``cls < 0``) dropped, a missing difficult
    column read as 0. A label that is no detection label is a one-line error naming ``rec_path``."""
    label = np.atleast_1d(np.asarray(label, dtype=np.float64))
    if label.size < 2 or label[0] < 2 or label[1] < 5 or (label.size - int(label[0])) % int(label[1]):
        raise UserError(f"{rec_path}: record {number} has no detection label "
                        "(pack a detection list with tools/prepare_dataset.py)")
    header_width, object_width = int(label[0]), int(label[1])
    rows = label[header_width:].reshape(-1, object_width)
    objects = np.zeros((rows.shape[0], 6))
    objects[:, :min(6, object_width)] = rows[:, :6]
    return objects[objects[:, 0] >= 0]


class LabelScan(NamedTuple):
    """What :func:`scan_labels` found: ``images`` and the ``widest`` packed label (header and objects, the
    length ``ImageDetRecordIter``'s ``label_pad_width`` counts)."""

    images: int
    widest: int


def scan_labels(rec_path: str, list_path: str = "", num_classes: int | None = None, flag: str = "--num-class"
                ) -> LabelScan:
    """Check ``rec_path`` (and ``list_path``, whose labels replace the packed ones): its image count and widest label.

    The whole ``.rec`` is read (against its ``.idx`` when one sits beside
    it): see :func:`iter_records` for what fails. With ``num_classes``, a
    class id of ``num_classes`` or more is a one-line error naming the file
    and ``flag``: the network would have no output for it.
    """
    idx_path = os.path.splitext(rec_path)[0] + ".idx"
    labels = [np.asarray(header.label, dtype=np.float32).ravel()
              for header, _ in iter_records(rec_path, idx_path if os.path.isfile(idx_path) else None)]
    source = rec_path
    if list_path:
        labels, source = list(_list_labels(list_path)), list_path
    if num_classes is not None:
        for number, label in enumerate(labels):
            if label.size < 2:
                continue
            header_width, object_width = int(label[0]), max(int(label[1]), 1)
            classes = label[header_width::object_width]
            top = classes.max(initial=-1)
            if top >= num_classes:
                raise UserError(f"{source}: image {number} has class id {int(top)}, but {flag} {num_classes} "
                                f"allows 0..{num_classes - 1}")
    return LabelScan(len(labels), max((label.size for label in labels), default=0))


def check_record_file(path: str, what: str) -> None:
    """One-line error unless ``path`` exists and starts with the RecordIO magic (``what`` names it)."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: {what} not found")
    with open(path, "rb") as f:
        head = f.read(4)
    if len(head) < 4 or struct.unpack("<I", head)[0] != RECORDIO_MAGIC:
        raise UserError(f"{path}: not a RecordIO file (pack one with tools/prepare_dataset.py)")


# --- shards of a distributed job ---------------------------------------------------------------------
def record_offsets(rec_path: str) -> tuple[list[int], int]:
    """(byte offset of every record's start, file size) of a RecordIO file, reading only the headers.

    A record longer than the format's 2**29-byte chunk is split into parts
    whose headers carry a continuation flag (2 or 3); only flags 0 and 1
    start a record, as dmlc's ``RecordIOSplitter`` counts them.
    """
    size = os.path.getsize(rec_path)
    offsets = []
    with open(rec_path, "rb") as f:
        position = 0
        while position + 8 <= size:
            f.seek(position)
            magic, lrec = struct.unpack("<II", f.read(8))
            if magic != RECORDIO_MAGIC:
                raise UserError(f"{rec_path}: invalid RecordIO framing at byte {position}")
            flag, length = lrec >> 29, lrec & ((1 << 29) - 1)
            if flag in (0, 1):
                offsets.append(position)
            position += 8 + ((length + 3) & ~3)
    return offsets, size


def shard_of_records(rec_path: str, num_parts: int) -> list[int]:
    """The part (0..num_parts-1) of each record that ``ImageDetRecordIter(num_parts=..., part_index=...)`` reads.

    dmlc's ``InputSplitBase::ResetPartition`` cuts the file into ``num_parts``
    byte ranges of ``ceil(size / num_parts)`` bytes (rounded up to 4) and part
    ``k`` reads the records that start inside its range. Shards are therefore
    contiguous runs of records, balanced in bytes rather than in images.
    """
    offsets, size = record_offsets(rec_path)
    step = -(-size // max(1, num_parts))
    step = (step + 3) // 4 * 4
    return [min(offset // step, num_parts - 1) for offset in offsets]


def shard_sizes(rec_path: str, num_parts: int) -> list[int]:
    """Images in each part (see :func:`shard_of_records`)."""
    sizes = [0] * num_parts
    for part in shard_of_records(rec_path, num_parts):
        sizes[part] += 1
    return sizes
