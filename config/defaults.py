"""Command-line defaults of the scripts, in one place (values of example/ssd's and example/rcnn's train.py).

``VOC_CLASSES`` is the original's default ``--class-names``.
"""
import os

CWD = os.getcwd()

VOC_CLASSES = (
    "aeroplane, bicycle, bird, boat, bottle, bus, car, cat, chair, cow, diningtable, dog, horse, "
    "motorbike, person, pottedplant, sheep, sofa, train, tvmonitor"
)

TRAIN = dict(
    train_path=os.path.join(CWD, "data", "train.rec"),
    train_list="",
    val_path=os.path.join(CWD, "data", "val.rec"),
    val_list="",
    network="vgg16_reduced",
    batch_size=32,
    resume="-1",
    finetune=-1,
    pretrained=os.path.join(CWD, "model", "vgg16_reduced"),
    epoch=1,
    prefix=os.path.join(CWD, "model", "ssd"),
    begin_epoch=0,
    end_epoch=240,
    frequent=20,
    data_shape=300,
    label_width=350,
    lr=0.002,
    momentum=0.9,
    wd=0.0005,
    lr_steps="80, 160",
    lr_factor=0.1,
    mean_r=123.0,
    mean_g=117.0,
    mean_b=104.0,
    std_r=1.0,
    std_g=1.0,
    std_b=1.0,
    freeze="^(conv1_|conv2_).*",
    log="train.log",
    monitor=0,
    pattern=".*",
    num_class=20,
    num_example=-1,  # the original: 16551 (VOC07+12 trainval); -1 counts the images
    class_names=VOC_CLASSES,
    nms=0.45,
    nms_topk=400,
    overlap=0.5,
    kv_store="local",
    warmup_epochs=0.0,
    cls_loss="softmax",
    keep=5,
)

# train.py defaults of Faster R-CNN where they differ from SSD's (example/rcnn's train.py); the
# flags of the "Faster R-CNN" group take their defaults from symbol/rcnn_factory.py's RCNNConfig and
# the network's entry in NETWORKS. evaluate.py and demo.py look for ``<prefix>_<network>``.
RCNN_TRAIN = dict(
    prefix=os.path.join(CWD, "model", "rcnn"),
    batch_size=None,  # --rcnn-batch-size images on each device
    pretrained=None,  # the network's ImageNet weights file, e.g. model/vgg16-0000.params
    end_epoch=10,
    frequent=100,
    lr=0.001,
    lr_steps="7",
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
