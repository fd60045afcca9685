"""torchvision's own ``vgg16`` model code, importable where its compiled ops do not load.

The torchvision 0.28 wheel that pairs with the CPU torch 2.13 here is a CUDA build: its ``_C``
library (nms, roi_align, ...) needs CUDA libraries, so ``import torchvision`` fails while
registering fake and autograd kernels for ops that never loaded. The model definitions are pure
Python; :func:`import_torchvision` skips those two registration modules when the plain import fails.
"""
from __future__ import annotations

import sys
import types

REGISTRATIONS = ("torchvision._meta_registrations", "torchvision._autograd_registrations")


def import_torchvision() -> types.ModuleType:
    """``import torchvision``; if its compiled ops break the import, again without registering them."""
    try:
        import torchvision
        return torchvision
    except (RuntimeError, OSError, ImportError):
        for name in [name for name in sys.modules if name == "torchvision" or name.startswith("torchvision.")]:
            del sys.modules[name]  # drop the half-imported package
    for name in REGISTRATIONS:
        sys.modules[name] = types.ModuleType(name)
    import torchvision
    return torchvision
