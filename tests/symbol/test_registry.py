"""symbol/registry.py: one table of every --network name, its family and builder; and the library-wide
limit of ten parameters per public function."""
from __future__ import annotations

import ast
import pathlib

import pytest
from helpers import ROOT as REPOSITORY

from config.errors import UserError
from symbol import rcnn_factory, symbol_builder, symbol_factory
from symbol.registry import (
    BASE_NETWORKS,
    FAMILIES,
    NETWORKS,
    RCNN,
    SSD,
    RCNNNetwork,
    SSDNetwork,
    get_base_network,
    get_network,
    network_names,
)

ROOT = pathlib.Path(REPOSITORY)
SSD_NAMES = {"vgg16_reduced", "inceptionv3", "resnet50", "resnet101", "mobilenet", "toy"}
RCNN_NAMES = {"faster_rcnn_vgg16", "faster_rcnn_resnet50", "faster_rcnn_resnet101", "faster_rcnn_small"}


def test_every_name_resolves_to_its_own_entry():
    assert set(network_names()) == SSD_NAMES | RCNN_NAMES == set(NETWORKS)
    for name in network_names():
        entry = get_network(name)
        assert entry.name == name and entry.family in FAMILIES
        assert get_network(name, entry.family) is entry


def test_families():
    assert set(network_names(SSD)) == SSD_NAMES and set(network_names(RCNN)) == RCNN_NAMES
    assert network_names() == network_names(SSD) + network_names(RCNN)  # table order, SSD first
    assert all(isinstance(get_network(name), SSDNetwork) and get_network(name).family == SSD for name in SSD_NAMES)
    assert all(isinstance(get_network(name), RCNNNetwork) and get_network(name).family == RCNN for name in RCNN_NAMES)
    with pytest.raises(ValueError, match="family"):
        network_names("yolo")


def test_unknown_name_lists_both_families():
    with pytest.raises(UserError) as err:
        get_network("nonet")
    message = str(err.value)
    known = sorted(SSD_NAMES) + sorted(RCNN_NAMES)
    # train.py's wording, so it can use this lookup unchanged
    assert message == f"--network nonet: unknown network; known: {', '.join(known)}"


def test_a_family_lookup_refuses_the_other_family():
    with pytest.raises(UserError, match=r"^--network: unknown network 'faster_rcnn_small'; known networks: ") as err:
        get_network("faster_rcnn_small", SSD)
    assert str(err.value).split("known networks: ")[1] == ", ".join(sorted(SSD_NAMES))
    with pytest.raises(UserError, match=r"^--network: unknown Faster R-CNN network 'toy'; choose from ") as err:
        get_network("toy", RCNN)
    assert str(err.value).split("choose from ")[1] == ", ".join(network_names(RCNN))
    # the family APIs go through the same lookup
    with pytest.raises(UserError, match="'faster_rcnn_small'"):
        symbol_factory.get_config("faster_rcnn_small", 300)
    with pytest.raises(UserError, match="'toy'"):
        rcnn_factory.make_config("toy")


def test_family_views_follow_the_registry():
    assert list(symbol_factory.NETWORKS) == list(network_names(SSD)) == list(symbol_factory.DEFAULT_DATA_SHAPES)
    assert list(rcnn_factory.NETWORKS) == list(network_names(RCNN))
    for name in network_names(SSD):
        assert symbol_factory.NETWORKS[name] is get_network(name).config
        assert symbol_factory.DEFAULT_DATA_SHAPES[name] == get_network(name).default_data_shape
    for name in network_names(RCNN):
        assert rcnn_factory.NETWORKS[name] is get_network(name) is rcnn_factory.get_network(name)
    with pytest.raises(TypeError):
        symbol_factory.NETWORKS["mynet"] = symbol_factory.NETWORKS["toy"]  # read-only: add networks in the table


def test_base_network_map_covers_every_ssd_preset():
    used = set()
    for name in network_names(SSD):
        preset = get_network(name)
        # vgg16_reduced switches to its SSD512 layout from 448 pixels
        for shape in {preset.default_data_shape, 300, 512}:
            base = preset.config(shape)["network"]
            assert base in BASE_NETWORKS, (name, shape, base)
            used.add(base)
    assert used == set(BASE_NETWORKS)  # no entry that no preset uses
    assert get_base_network("toy") is BASE_NETWORKS["toy"]
    with pytest.raises(UserError, match=r"^--network: no base network 'nonet'; base networks: vgg16_reduced"):
        symbol_builder.get_symbol(num_classes=2, **dict(symbol_factory.get_config("toy", 256), network="nonet"))


@pytest.mark.parametrize("name", sorted(SSD_NAMES))
def test_every_ssd_entry_builds_its_graphs(name):
    shape = get_network(name).default_data_shape
    train = symbol_factory.get_symbol_train(name, shape, num_classes=20)
    test = symbol_factory.get_symbol(name, shape, num_classes=20)
    assert train.list_outputs() == ["cls_prob_output", "loc_loss_output", "cls_label_output", "det_out_output"]
    assert test.list_outputs() == ["detection_output"]


@pytest.mark.parametrize("name", sorted(RCNN_NAMES))
def test_every_rcnn_entry_builds_its_graphs_with_its_defaults(name):
    cfg = rcnn_factory.make_config(name)
    for key, value in get_network(name).defaults.items():
        assert getattr(cfg, key) == value
    train = rcnn_factory.get_rcnn_train(name, 3, cfg)
    test = rcnn_factory.get_rcnn_test(name, 3, cfg)
    assert train.list_outputs() == ["rpn_cls_prob_output", "rpn_bbox_loss_output", "cls_prob_reshape_output",
                                    "bbox_loss_reshape_output", "rcnn_label_output"]
    assert test.list_outputs() == ["rois_output", "cls_prob_reshape_output", "bbox_pred_reshape_output"]
    num_anchors = len(cfg.rpn_anchor_scales) * len(cfg.rpn_anchor_ratios)
    shapes = dict(zip(test.list_arguments(), test.infer_shape(data=(1, 3, 320, 320), im_info=(1, 3))[0]))
    assert shapes["rpn_cls_score_weight"][0] == 2 * num_anchors and shapes["cls_score_weight"][0] == 4


# --- at most ten parameters per public function ----------------------------------------------

MAX_PARAMETERS = 10
LIBRARY = ("config", "dataset", "symbol", "evaluate", "train")
# the original example/ssd signatures, kept as they were
ORIGINAL_SIGNATURES = {
    "symbol.symbol_builder.get_symbol_train",
    "symbol.symbol_builder.get_symbol",
    "evaluate.evaluate_net.evaluate_net",
    "train.train_net.train_net",
}


def _public_functions(tree: ast.Module, prefix: str):
    """``(qualified name, parameter count)`` of public module functions and methods (``__init__`` included)."""
    def walk(node, prefix: str):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef) and not child.name.startswith("_"):
                yield from walk(child, f"{prefix}.{child.name}")
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
                    not child.name.startswith("_") or child.name == "__init__"):
                args = child.args
                names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
                if isinstance(node, ast.ClassDef) and names and names[0] in ("self", "cls"):
                    names = names[1:]
                yield f"{prefix}.{child.name}", len(names)
    yield from walk(tree, prefix)


def _too_long(sources: dict[str, str]) -> list[str]:
    found = []
    for module, source in sources.items():
        for name, count in _public_functions(ast.parse(source), module):
            if count > MAX_PARAMETERS and name not in ORIGINAL_SIGNATURES:
                found.append(f"{name} ({count})")
    return found


def test_parameter_scan_counts_what_it_should():
    source = '''
def ok(a, b, c, d, e, f, g, h, i, j): pass
def long(a, b, c, d, e, f, g, h, i, j, *, k): pass
def _private(a, b, c, d, e, f, g, h, i, j, k): pass
def star(*args, **kwargs): pass
class Loader:
    def __init__(self, a, b, c, d, e, f, g, h, i, j): pass
    def method(self, a, b, c, d, e, f, g, h, i, j, k): pass
    @classmethod
    def build(cls, a, b, c, d, e, f, g, h, i, j): pass
'''
    assert _too_long({"pkg.mod": source}) == ["pkg.mod.long (11)", "pkg.mod.Loader.method (11)"]
    assert _too_long({"symbol.symbol_builder": "def get_symbol(" + ", ".join("abcdefghijkl") + "): pass"}) == []


def test_no_public_function_takes_more_than_ten_parameters():
    sources = {}
    for package in LIBRARY:
        for path in sorted((ROOT / package).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            sources[module] = path.read_text()
    assert _too_long(sources) == []
