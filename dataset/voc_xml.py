"""Pascal VOC annotation files: the objects and the image size of one XML file.

Malformed files are one-line errors naming the file (:class:`config.errors.UserError`).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET

from config.errors import UserError


def _text(node: ET.Element, tag: str, filename: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None:
        raise UserError(f"{filename}: <{node.tag}> has no <{tag}>")
    return child.text.strip()


def _load_xml(filename: str) -> ET.Element:
    try:
        return ET.parse(filename).getroot()
    except ET.ParseError as err:
        raise UserError(f"{filename}: not valid XML ({err})") from None


def parse_voc_rec(filename: str) -> list[dict]:
    """Objects of one VOC annotation file.

    Returns one dict per ``<object>``: ``name`` (str), ``difficult`` (int, 0
    when the tag is absent) and ``bbox`` ``[xmin, ymin, xmax, ymax]`` in the
    file's 1-based pixel coordinates (read as floats, so sub-pixel boxes of
    VOC-like datasets also load).
    """
    objects = []
    for obj in _load_xml(filename).iter("object"):
        box = obj.find("bndbox")
        if box is None:
            raise UserError(f"{filename}: <object> has no <bndbox>")
        difficult = obj.find("difficult")
        objects.append(
            {
                "name": _text(obj, "name", filename),
                "difficult": int(difficult.text) if difficult is not None and difficult.text else 0,
                "bbox": [float(_text(box, tag, filename)) for tag in ("xmin", "ymin", "xmax", "ymax")],
            }
        )
    return objects


def read_voc_image_size(filename: str) -> tuple[int, int]:
    """``(width, height)`` of the image from the ``<size>`` of a VOC annotation file."""
    size = _load_xml(filename).find("size")
    if size is None:
        raise UserError(f"{filename}: no <size>")
    return int(_text(size, "width", filename)), int(_text(size, "height", filename))
