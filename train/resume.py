"""Where a run starts: ``--resume`` (an epoch, -1 or 'auto') resolved and its checkpoint loaded."""
from __future__ import annotations

import logging
import os

from evaluate import checkpoint
from train.logs import devices_label


def load_resume(prefix: str, resume, ctx, logger: logging.Logger, clean: bool = True) -> tuple:
    """Resolve ``--resume`` (an epoch, -1, or 'auto') and load that checkpoint.

    Returns ``(epoch, arg_params, aux_params, params_file, states_file)``; epoch
    is -1 and the rest None when not resuming. 'auto' takes the newest
    checkpoint that loads: one that exists but cannot be read (cut short by a
    crash outside the toolkit, a full disk, a copy) is reported and the one
    before it is tried. ``states_file`` is None (with a warning) when the
    checkpoint has no usable optimizer state, e.g. one written by the original example.
    ``clean`` False leaves temporaries alone (a distributed job's ranks other than 0: rank 0 owns the files).
    """
    for path in checkpoint.remove_stale_temporaries(prefix) if clean else []:
        logger.info("Removed %s, left by a run that was killed", path)
    auto = str(resume).strip().lower() == "auto"
    epoch = checkpoint.resolve_resume(resume, prefix)
    if epoch <= 0:
        return -1, None, None, None, None
    candidates = [e for e in reversed(checkpoint.saved_epochs(prefix)) if e <= epoch] if auto else [epoch]
    for epoch in candidates:
        try:
            _, args, auxs = checkpoint.load_checkpoint(prefix, epoch, flag="--resume")
            break
        except checkpoint.CorruptCheckpointError as err:
            if not auto:
                raise
            logger.warning("warning: %s; --resume auto takes the epoch before it", err)
    else:
        logger.warning("warning: no checkpoint of %s loads: starting from the beginning", prefix)
        return -1, None, None, None, None
    logger.info("Resume training with %s from epoch %d", devices_label(ctx), epoch)
    states_file = checkpoint.states_path(prefix, epoch)
    if not os.path.isfile(states_file):
        logger.warning("No optimizer state saved with checkpoint %04d: momentum restarts from zero", epoch)
        states_file = None
    elif not checkpoint.states_loadable(states_file):
        logger.warning("warning: %s cannot be loaded (cut short): momentum restarts from zero", states_file)
        states_file = None
    return epoch, args, auxs, checkpoint.params_path(prefix, epoch), states_file
