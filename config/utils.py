"""Helpers that turn the namedtuple augmentation settings into iterator kwargs."""
from __future__ import annotations

import collections.abc
from typing import Any


class DotDict(dict):
    """A dict whose keys are also attributes (``cfg.train`` == ``cfg['train']``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as err:
            raise AttributeError(name) from err

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value


def zip_namedtuple(nt_list: list) -> dict:
    """Zip a list of namedtuples field-wise: ``[A(x=1), A(x=2)] -> {'x': [1, 2]}``."""
    if not nt_list:
        return {}
    if not isinstance(nt_list, list):
        nt_list = [nt_list]
    for nt in nt_list:
        assert type(nt) is type(nt_list[0])
    return {key: [getattr(nt, key) for nt in nt_list] for key in nt_list[0]._fields}


def config_as_dict(cfg: collections.abc.Mapping) -> dict:
    """Flatten an augmentation config into ``mx.io.ImageDetRecordIter`` kwargs.

    The original used ``collections.Mapping``, which Python 3.10 removed; this
    uses ``collections.abc.Mapping``.
    """
    ret = dict(cfg.__dict__) if not isinstance(cfg, collections.abc.Mapping) else dict(cfg)
    samplers = ret.pop("rand_crop_samplers", [])
    num_samplers = len(samplers)
    ret["num_crop_sampler"] = num_samplers
    if num_samplers > 0:
        ret.update(zip_namedtuple(samplers))
        ret["rand_crop_prob"] = num_samplers / (num_samplers + 1.0)
    pad = ret.pop("rand_pad", None)
    if pad is not None:
        ret.update(pad._asdict())
    jitter = ret.pop("color_jitter", None)
    if jitter is not None:
        ret.update(jitter._asdict())
    return ret
