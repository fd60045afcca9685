"""Command-line defaults of evaluate.py, demo.py and tools/deploy.py (example/ssd's values); train.py's come
from :mod:`config.train_config`.

``VOC_CLASSES`` is the original's default ``--class-names``.
"""
import os

CWD = os.getcwd()

VOC_CLASSES = (
    "aeroplane, bicycle, bird, boat, bottle, bus, car, cat, chair, cow, diningtable, dog, horse, "
    "motorbike, person, pottedplant, sheep, sofa, train, tvmonitor"
)

EVALUATE = dict(
    rec_path=os.path.join(CWD, "data", "val.rec"),
    list_path="",
    network="vgg16_reduced",
    batch_size=32,
    num_class=20,
    class_names=VOC_CLASSES,
    epoch=0,
    prefix=os.path.join(CWD, "model", "ssd_"),
    data_shape=300,
    mean_r=123.0,
    mean_g=117.0,
    mean_b=104.0,
    nms=0.45,
    overlap=0.5,
)

DEMO = dict(
    network="resnet50",
    images=os.path.join(CWD, "data", "demo", "dog.jpg"),
    ext=".jpg",
    epoch=0,
    batch_size=1,
    prefix=os.path.join(CWD, "model", "ssd_"),
    data_shape=512,
    mean_r=123.0,
    mean_g=117.0,
    mean_b=104.0,
    thresh=0.5,
    nms=0.5,
    class_names=VOC_CLASSES,
)

DEPLOY = dict(
    network="vgg16_reduced",
    epoch=0,
    prefix=os.path.join("model", "ssd_"),
    data_shape=300,
    num_class=20,
    nms=0.5,
    topk=400,
)
