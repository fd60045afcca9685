"""Peer toolkits' model code, for the equality tests of ``tools/convert_weights.py``.

* :mod:`peers.ssd_pytorch` -- amdegroot/ssd.pytorch's SSD300 (it has no package), rewritten in
  PyTorch from its published architecture; not that project's own file. Same layers, state-dict
  keys, priors and detection.
* :mod:`peers.gluoncv_peer` -- imports GluonCV's own model zoo beside a recent torch.
* :mod:`peers.torchvision_peer` -- torchvision's own ``vgg16`` where its compiled ops do not load.
"""
