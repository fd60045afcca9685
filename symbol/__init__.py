"""Graphs only: base networks (one module each), shared SSD heads in ``common.py``,
the network registry in ``symbol_factory.py`` and the Faster R-CNN graphs."""
import config  # noqa: F401  (sets thread defaults before mxnet loads)
