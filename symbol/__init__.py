"""Graphs only: every ``--network`` name in ``registry.py``; SSD base networks (one module each),
presets in ``ssd_presets.py``, shared heads in ``ssd_heads.py``, graphs by name in ``symbol_factory.py``;
the Faster R-CNN graphs (``rcnn_head.py`` and its backbones) by name in ``rcnn_factory.py``."""
import config  # noqa: F401  (sets thread defaults before mxnet loads)
