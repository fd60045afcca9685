"""Training loops and training-time metrics."""
import config  # noqa: F401  (sets thread defaults before mxnet loads)
