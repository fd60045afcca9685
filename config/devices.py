"""Turn ``--gpus`` / ``--cpus`` into a list of mxnet contexts."""
from __future__ import annotations

from config.errors import UserError

GPU_PACKAGE_HINT = "pip uninstall -y mxnet && pip install mxnet-cu112==1.9.1 (or pip install -e '.[gpu]')"


def mxnet_has_cuda() -> bool:
    """True when the installed mxnet wheel was built with CUDA."""
    import mxnet as mx

    return mx.runtime.Features().is_enabled("CUDA")


def visible_gpus() -> int:
    """Number of GPUs mxnet can use (0 on a CPU-only build)."""
    import mxnet as mx

    return mx.context.num_gpus() if mxnet_has_cuda() else 0


def parse_devices(gpus: str | None, cpus: int = 0, flag: str = "--gpus") -> list:
    """Contexts for ``gpus`` (comma list, '' for the CPU, None for 'all visible').

    ``gpus=None`` picks every visible GPU, or the CPU when mxnet has no GPU
    support. ``cpus=N`` (N > 1) gives N CPU contexts, which trains data-parallel
    exactly as several GPUs would; it is how multi-device code is tested on a
    machine without GPUs.
    """
    import mxnet as mx

    if cpus and cpus < 0:
        raise UserError(f"--cpus {cpus}: must be positive")
    if cpus and cpus > 0:
        if gpus not in (None, ""):
            raise UserError(f"--cpus {cpus} and {flag} {gpus}: give one of them")
        return [mx.cpu(i) for i in range(cpus)]
    if gpus is None:
        count = visible_gpus()
        return [mx.gpu(i) for i in range(count)] if count else [mx.cpu()]
    ids = [g.strip() for g in str(gpus).split(",") if g.strip()]
    if not ids:
        return [mx.cpu()]
    try:
        gpu_ids = [int(g) for g in ids]
    except ValueError:
        raise UserError(f"{flag} {gpus!r}: expected a comma list of GPU ids such as 0,1") from None
    if not mxnet_has_cuda():
        raise UserError(
            f"{flag} {gpus}: this mxnet build has no GPU support; install the CUDA build: {GPU_PACKAGE_HINT}"
            f", or pass {flag} '' to use the CPU"
        )
    count = mx.context.num_gpus()
    bad = [g for g in gpu_ids if g < 0 or g >= count]
    if bad:
        raise UserError(f"{flag} {gpus}: GPU {bad[0]} does not exist ({count} visible)")
    return [mx.gpu(g) for g in gpu_ids]
