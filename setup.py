"""Installable MXNet symbolic-API detection toolkit (SSD and Faster R-CNN).

The mxnet build is chosen by extra, because the CPU and CUDA wheels both
install the same ``mxnet`` package and cannot sit side by side:

    pip install -e '.[cpu]'     # mxnet==1.9.1 (CPU, MKLDNN)
    pip install -e '.[gpu]'     # mxnet-cu112==1.9.1 (CUDA 11.2)
"""
from setuptools import setup

MXNET_CPU = "mxnet==1.9.1"
MXNET_GPU = "mxnet-cu112==1.9.1"

setup(
    name="mxdet",
    version="0.1.0",
    description="A working port of MXNet's example/ssd and example/rcnn",
    python_requires=">=3.10",
    packages=["symbol", "dataset", "train", "evaluate", "config", "tools"],
    package_data={"dataset": ["names/*.names"]},
    install_requires=[
        # mxnet 1.9.1 uses np.bool at import time, removed in numpy 1.24
        "numpy>=1.21,<1.24",
        # opencv-python 4.12 and later need numpy 2
        "opencv-python<4.12",
        "matplotlib",
    ],
    extras_require={
        "cpu": [MXNET_CPU],
        "gpu": [MXNET_GPU],
        "coco": ["pycocotools"],
        # tools/export_onnx.py and evaluate.py/demo.py --onnx: mxnet 1.9.1's mx2onnx imports onnx.mapping,
        # which onnx 1.16 removed; 1.13 is the first release with Python 3.11 wheels
        "onnx": ["onnx>=1.13,<1.16", "onnxruntime>=1.16,<1.20"],
        "test": [MXNET_CPU, "pytest", "ruff", "pycocotools", "import-linter"],
        # peer toolkits whose model code tests tools/convert_weights.py (CPU torch wheel;
        # gluoncv 0.10.5 runs on mxnet 1.9.1, and numpy<1.24 above keeps its scipy/pandas old enough)
        "peers": ["torch==2.13.0", "torchvision==0.28.0", "gluoncv==0.10.5"],
    },
)
