"""An exponential moving average of the weights (``train.py --ema DECAY``).

After every optimizer update each parameter and auxiliary state (BatchNorm's
moving statistics included) of the first device is folded into its average:

    average = d * average + (1 - d) * weight,   d = min(decay, (1 + t) / (10 + t))

where ``t`` counts the updates from 1. The warm-up of ``d`` keeps the first
averages from clinging to the random initialisation. The average is what a
run validates, keeps as ``-best`` and saves as ``.params``; the raw weights
the optimizer keeps training go into the ``.states`` file beside it, with
``t``, so that ``--resume auto`` continues exactly (:class:`train.module.ResumableModule`).
"""
from __future__ import annotations

import mxnet as mx

# arrays per multi_sgd_update call: mxnet's kernel takes at most 60 (MultiSGDKernelParam::N); more crash it
FUSED_ARRAYS = 32


def decay_at(decay: float, step: int) -> float:
    """The decay of update ``step`` (counted from 1): ``min(decay, (1 + step) / (10 + step))``."""
    return min(decay, (1.0 + step) / (10.0 + step))


class WeightAverage:
    """The average of ``module``'s weights; ``step`` is the number of updates folded in so far.

    ``average`` maps every parameter and auxiliary name to a float32 array on
    the CPU. :meth:`swap_in` puts the average into the module (for validation and
    the checkpoint) and :meth:`swap_out` puts the raw weights back.
    """

    def __init__(self, module: mx.mod.Module, decay: float, step: int = 0):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay {decay}: must lie strictly between 0 and 1")
        self.module = module
        self.decay = decay
        self.step = step
        self.average = {name: array.copyto(mx.cpu()) for name, array in self._current().items()}
        self.raw: tuple[dict, dict] | None = None  # the raw weights while the average is swapped in

    def _current(self) -> dict[str, mx.nd.NDArray]:
        """The first device's arrays of every parameter and auxiliary state, by name."""
        group = self.module._exec_group
        arrays = dict(zip(group.param_names, (copies[0] for copies in group.param_arrays)))
        arrays.update(zip(group.aux_names, (copies[0] for copies in group.aux_arrays)))
        return arrays

    def update(self, *_args) -> None:
        """Fold the module's current weights in (a batch-end callback: ``fit`` calls it after the update)."""
        self.step += 1
        d = decay_at(self.decay, self.step)
        # mxnet does not order reads of BatchNorm's moving statistics against the forward that rewrites them
        # in place: without a full wait before the read and after it, the average took them before this
        # batch's forward had written them or after the next one had (tests/train/test_ema.py saw both)
        mx.nd.waitall()
        current = self._current()
        names = list(current)
        # one fused kernel per FUSED_ARRAYS arrays instead of four operators each (19 ms against 5 ms a
        # batch for the toy's 92 arrays): sgd_update with lr 1, wd 1 - d and rescale_grad -(1 - d) writes
        # w - (-(1 - d) x + (1 - d) w) = d w + (1 - d) x
        for start in range(0, len(names), FUSED_ARRAYS):
            chunk = names[start:start + FUSED_ARRAYS]
            pairs = [array for name in chunk for array in (self.average[name], current[name].as_in_context(mx.cpu()))]
            mx.nd.multi_sgd_update(*pairs, lrs=[1.0] * len(chunk), wds=[1.0 - d] * len(chunk),
                                   rescale_grad=-(1.0 - d), num_weights=len(chunk),
                                   out=[self.average[name] for name in chunk])
        mx.nd.waitall()

    def averaged_params(self) -> tuple[dict, dict]:
        """``(arg_params, aux_params)`` of the average, as ``Module.get_params`` splits them."""
        aux_names = set(self.module._exec_group.aux_names)
        args = {name: value for name, value in self.average.items() if name not in aux_names}
        auxs = {name: value for name, value in self.average.items() if name in aux_names}
        return args, auxs

    def swap_in(self) -> tuple[dict, dict]:
        """Keep the raw weights aside and load the average into the module; returns the average."""
        if self.raw is None:
            # copies: get_params hands out the module's own arrays, which set_params overwrites in place
            args, auxs = self.module.get_params()
            self.raw = ({k: v.copy() for k, v in args.items()}, {k: v.copy() for k, v in auxs.items()})
            args, auxs = self.averaged_params()
            self.module.set_params(args, auxs, allow_missing=False, force_init=True)
        return self.averaged_params()

    def swap_out(self) -> None:
        """Put the raw weights back into the module."""
        if self.raw is not None:
            args, auxs = self.raw
            self.raw = None
            self.module.set_params(args, auxs, allow_missing=False, force_init=True)

    def raw_params(self) -> dict[str, mx.nd.NDArray]:
        """The raw weights by name (the module's own, or those kept aside by :meth:`swap_in`)."""
        if self.raw is not None:
            return {**self.raw[0], **self.raw[1]}
        return {name: array.copyto(mx.cpu()) for name, array in self._current().items()}
