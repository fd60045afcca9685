"""``DetRecordIter``: detection batches from a packed ``.rec`` file.

It wraps the C++ ``mx.io.ImageDetRecordIter`` (decoding, the SSD crop / pad /
mirror / colour augmentation of ``config.augmentation.TRAIN_AUGMENTATIONS["ssd"]``, resizing, mean
and std) and reshapes its flat labels into one row per object.

``ImageDetRecordIter`` returns per image ``[4 values it adds, header_width,
object_width, header..., objects...]`` padded with ``label_pad_value``; the
header width sits at position 4 and the object width at 5. The first batch is
read once to learn them, as the original did; every batch then has::

    data   [batch, 3, H, W]  float32, RGB, (pixel - mean) / std
    label  [batch, max_objects, object_width]  rows [cls, xmin, ymin, xmax, ymax, difficult],
           normalised; unused rows are -1

The last batch of an epoch is filled up with repeats of its own first images
(data, labels and index); ``batch.pad`` says how many. ``ImageDetRecordIter``'s
default ``round_batch=True`` fills it with the next epoch's first images and
then starts that epoch after them (its prefetch thread can do so even before
the first ``reset()``), so an evaluation that honours ``pad`` silently skips
images, and a set smaller than one batch fails in the second epoch. With
``round_batch=False`` it leaves stale or all-zero entries, whose zero labels
would read as degenerate class-0 boxes. ``DetRecordIter`` therefore uses
``round_batch=False`` and fills the padding itself: every epoch starts at the
first image and yields each image exactly once outside the padding.

``label_pad_width`` is the packed label width (2 + 6 x objects for
``prepare_dataset.py`` lists); training passes ``--label-width`` (350: 58
objects) so that train and validation batches have the same shape.

Differences from the original: docs/upstream.md.
"""
from __future__ import annotations

import os
import re
from collections.abc import Sequence

import mxnet as mx
import numpy as np

from config.errors import UserError
from dataset.recordio import check_record_file

_PAD_TOO_SMALL = re.compile(r"label_pad_width:?\s*(-?\d+)\s*smaller than estimated width:?\s*(\d+)")


class DetRecordIter(mx.io.DataIter):
    """Detection data iterator over ``ImageDetRecordIter``.

    Args:
        path_imgrec: the ``.rec`` file.
        batch_size: images per batch; the last batch is padded with repeats (``batch.pad`` says how many).
        data_shape: output size, an int (square) or (3, H, W).
        path_imglist: optional ``.lst`` whose labels replace those packed in the ``.rec``.
        label_width: labels per image, -1 for variable.
        label_pad_width: pad every label to this packed width (2 + 6 x objects); -1 pads to the widest.
        label_pad_value: value of the padding rows.
        resize_mode: 'force' (stretch to data_shape), 'shrink' or 'fit'.
        mean_pixels: RGB means subtracted from the pixels.
        std_pixels: RGB standard deviations the result is divided by; None: no division.
        **kwargs: more ``ImageDetRecordIter`` arguments, usually ``**TRAIN_AUGMENTATIONS["ssd"]`` or ``**VALIDATION``.
    """

    def __init__(self, path_imgrec: str, batch_size: int, data_shape: int | Sequence[int], path_imglist: str = "",
                 label_width: int = -1, label_pad_width: int = -1, label_pad_value: float = -1,
                 resize_mode: str = "force", mean_pixels: Sequence[float] = (123, 117, 104),
                 std_pixels: Sequence[float] | None = None, **kwargs):
        super().__init__(batch_size)
        check_record_file(path_imgrec, "record file")
        if path_imglist and not os.path.isfile(path_imglist):
            raise UserError(f"{path_imglist}: image list file not found")
        if isinstance(data_shape, int):
            data_shape = (3, data_shape, data_shape)
        data_shape = tuple(int(v) for v in data_shape)
        if len(data_shape) != 3 or data_shape[0] != 3:
            raise UserError(f"--data-shape: expected an int or (3, H, W), got {data_shape}")
        kwargs["round_batch"] = False  # see the module doc
        if std_pixels is not None:
            kwargs.update(std_r=std_pixels[0], std_g=std_pixels[1], std_b=std_pixels[2])
        self.path_imgrec = path_imgrec
        try:
            self.rec = mx.io.ImageDetRecordIter(
                path_imgrec=path_imgrec, path_imglist=path_imglist, label_width=label_width,
                label_pad_width=label_pad_width, label_pad_value=label_pad_value, batch_size=batch_size,
                data_shape=data_shape, mean_r=mean_pixels[0], mean_g=mean_pixels[1], mean_b=mean_pixels[2],
                resize_mode=resize_mode, **kwargs)
        except mx.base.MXNetError as err:
            too_small = _PAD_TOO_SMALL.search(str(err))
            if too_small:
                pad, needed = too_small.groups()
                raise UserError(f"--label-width {pad} is too small for {path_imgrec}: its largest label needs "
                                f"{needed}; pass --label-width {needed} or more") from None
            if path_imglist and "Bad ImageList format" in str(err):
                raise UserError(f"{path_imglist}: every line must hold label_width={label_width} labels; "
                                "detection lists vary, so leave label_width at -1") from None
            raise

        self.provide_label = None
        if not self._get_batch():
            raise UserError(f"{path_imgrec}: no images in the record file")
        self.reset()

    @property
    def provide_data(self) -> list:
        return self.rec.provide_data

    def reset(self) -> None:
        self.rec.reset()

    def iter_next(self) -> bool:
        return self._get_batch()

    def next(self) -> mx.io.DataBatch:
        if self.iter_next():
            return self._batch
        raise StopIteration

    def _get_batch(self) -> bool:
        try:
            batch = self.rec.next()
        except StopIteration:
            return False
        label = batch.label[0].asnumpy()
        if self.provide_label is None:
            # learn the layout from the first image, as the original did
            first = label[0]
            self.batch_size = label.shape[0]
            self.label_header_width = int(first[4])
            self.label_object_width = int(first[5])
            if self.label_object_width < 5:
                raise UserError(f"{self.path_imgrec}: object width {self.label_object_width} < 5; "
                                "not a detection record file (pack it with tools/prepare_dataset.py)")
            self.label_start = 4 + self.label_header_width
            self.max_objects = (first.size - self.label_start) // self.label_object_width
            self.label_shape = (self.batch_size, self.max_objects, self.label_object_width)
            self.provide_label = [mx.io.DataDesc("label", self.label_shape)]
        end = self.label_start + self.max_objects * self.label_object_width
        objects = label[:, self.label_start:end].reshape(self.label_shape)
        data, index = batch.data[0], batch.index
        if batch.pad:
            # repeat the real images over the padding (see the module doc)
            real = self.batch_size - batch.pad
            source = np.concatenate([np.arange(real), np.arange(batch.pad) % real])
            data = mx.nd.take(data, mx.nd.array(source, ctx=data.context))
            objects, index = objects[source], np.asarray(index)[source]
        self._batch = mx.io.DataBatch(data=[data], label=[mx.nd.array(objects)], pad=batch.pad, index=index,
                                      provide_data=self.provide_data, provide_label=self.provide_label)
        return True
