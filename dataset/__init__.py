"""Reading and packing data: image databases, .lst/.rec packing, iterators."""
import config  # noqa: F401  (sets thread defaults before mxnet loads)
