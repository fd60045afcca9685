"""Images without labels, for inference (demo, detector)."""
from __future__ import annotations

import os

import numpy as np

from dataset.imdb import Imdb


class TestDB(Imdb):
    """A list of image files.

    Args:
        images: file names (or one name); ``root_dir`` is prepended and
            ``extension`` appended when given.
    """

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, images: str | list[str], root_dir: str | None = None, extension: str | None = None):
        images = images if isinstance(images, list) else [images]
        super().__init__(f"test{len(images)}")
        self.image_set_index = images
        self.num_images = len(images)
        self.root_dir = root_dir or None
        self.extension = extension or None

    def image_path_from_index(self, index: int) -> str:
        """Path of image ``index``; FileNotFoundError (one line in the CLIs) when it does not exist."""
        name = self.image_set_index[index]
        if self.extension:
            name += self.extension
        if self.root_dir:
            name = os.path.join(self.root_dir, name)
        if not os.path.isfile(name):
            raise FileNotFoundError(f"{name}: image file not found")
        return name

    def label_from_index(self, index: int) -> np.ndarray:
        """Always raises NotImplementedError: a TestDB holds images only."""
        raise NotImplementedError("TestDB holds images only, without labels")
