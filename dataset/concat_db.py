"""Several image databases with the same classes read as one (e.g. VOC 2007 + 2012)."""
from __future__ import annotations

import numpy as np

from config.errors import UserError
from dataset.imdb import Imdb


class ConcatDB(Imdb):
    """The images of ``imdbs`` one after another (or shuffled, the same order every run).

    Every database must have the same class list, in the same order, since the
    class ids index it.
    """

    def __init__(self, imdbs: Imdb | list[Imdb], shuffle: bool = False):
        imdbs = imdbs if isinstance(imdbs, list) else [imdbs]
        if not imdbs:
            raise UserError("ConcatDB: no databases to concatenate")
        super().__init__("+".join(db.name for db in imdbs), any(db.skip_bad for db in imdbs))
        first = imdbs[0]
        for db in imdbs[1:]:
            if db.classes != first.classes:
                raise UserError(f"cannot concatenate {first.name} and {db.name}: their class lists differ "
                                f"({', '.join(first.classes)} vs {', '.join(db.classes)})")
        self.imdbs = imdbs
        self.classes = list(first.classes)
        self.num_classes = len(self.classes)
        self.dropped = [entry for db in imdbs for entry in db.dropped]
        # one (database, index in it) pair per image
        self._entries = self._shuffled([(d, i) for d, db in enumerate(imdbs) for i in range(db.num_images)], shuffle)
        self.image_set_index = [f"{imdbs[d].name}/{imdbs[d].image_set_index[i]}" for d, i in self._entries]
        self.num_images = len(self._entries)

    def image_path_from_index(self, index: int) -> str:
        d, i = self._entries[index]
        return self.imdbs[d].image_path_from_index(i)

    def label_from_index(self, index: int) -> np.ndarray:
        d, i = self._entries[index]
        return self.imdbs[d].label_from_index(i)

    def image_size_from_index(self, index: int) -> tuple[int, int] | None:
        d, i = self._entries[index]
        return self.imdbs[d].image_size_from_index(i)
