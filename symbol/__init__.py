"""Graphs only: base networks (one module each), shared SSD heads in ``ssd_heads.py``,
the network registry in ``symbol_factory.py`` and the Faster R-CNN graphs."""
import config  # noqa: F401  (sets thread defaults before mxnet loads)
