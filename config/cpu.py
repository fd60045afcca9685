"""What the CPU can do, from ``/proc/cpuinfo``: its vector instruction sets and whether bfloat16 pays.

mxnet's bfloat16 kernels on the CPU are oneDNN's (MKLDNN, oneDNN 2.4 in mxnet 1.9.1); mxnet's own
kernels do not know the type. Capping oneDNN's instruction set (``DNNL_MAX_CPU_ISA``) on an AVX512_BF16
CPU shows what each level gives a bfloat16 convolution:

* ``avx512_core_bf16`` (AVX512F, BW, VL, DQ, VNNI and BF16): native kernels
  (``jit_bf16:avx512_core_bf16``), the level :data:`BFLOAT16_FLAGS` asks for;
* ``avx512_core`` or ``avx512_core_vnni``: emulated kernels (``jit_bf16:avx512_core``), about 4-5x
  slower than float32 on a 3-layer 64-channel convolution stack, so bfloat16 is no use there;
* ``avx2``: no bfloat16 convolution at all; the graph binds and its first convolution fails with
  "could not create a primitive descriptor iterator".

:func:`require_bfloat16` turns a missing flag into a one-line error before any graph is built.
The path of the cpuinfo file is a parameter everywhere so tests can use fake ones. A cap set in
``DNNL_MAX_CPU_ISA`` below ``AVX512_CORE_BF16`` turns bfloat16 off as a missing flag does (oneDNN 2.4
reads only that variable, and only in upper case).
"""
from __future__ import annotations

import os

from config.errors import UserError

CPUINFO = "/proc/cpuinfo"
# the flags that decide what lower precision can gain, in the order isa_summary prints them
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
# oneDNN's avx512_core level: without these there is no bfloat16 convolution at all
AVX512_CORE_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512dq")
# oneDNN's avx512_core_bf16 level (avx512_core + VNNI + BF16): native bfloat16 kernels; without
# the last two oneDNN emulates bfloat16, slower than float32
BFLOAT16_FLAGS = AVX512_CORE_FLAGS + ("avx512_vnni", "avx512_bf16")
ISA_CAP_VARIABLE = "DNNL_MAX_CPU_ISA"
# oneDNN 2.4's DNNL_MAX_CPU_ISA values, lowest first
ONEDNN_ISA_LEVELS = ("SSE41", "AVX", "AVX2", "AVX512_MIC", "AVX512_MIC_4OPS", "AVX512_CORE", "AVX512_CORE_VNNI",
                     "AVX512_CORE_BF16", "AVX512_CORE_AMX", "ALL")
# the caps below its native bfloat16 kernels; any other value leaves them on
ISA_CAPS_WITHOUT_BFLOAT16 = ONEDNN_ISA_LEVELS[:ONEDNN_ISA_LEVELS.index("AVX512_CORE_BF16")]


def _read_lines(path: str | None) -> list[str] | None:
    # CPUINFO is read at call time, so that a test can point it at another CPU's file
    try:
        with open(path or CPUINFO, encoding="utf-8", errors="replace") as f:
            return f.read().splitlines()
    except OSError:
        return None


def _field(lines: list[str], keys: tuple[str, ...]) -> str | None:
    """The value of the first ``key : value`` line whose key is one of ``keys`` (the first CPU's)."""
    for line in lines:
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in keys:
            return value.strip()
    return None


def cpu_flags(path: str | None = None) -> set[str]:
    """The first CPU's feature flags (x86 ``flags``, ARM ``Features``), lower case; an empty set
    where ``path`` cannot be read or has no such line."""
    lines = _read_lines(path)
    value = _field(lines, ("flags", "features")) if lines is not None else None
    return set(value.lower().split()) if value else set()


def cpu_model(path: str | None = None) -> str:
    """The ``model name`` of the first CPU (``'AMD EPYC'``), or ``'unknown'``."""
    lines = _read_lines(path)
    value = _field(lines, ("model name",)) if lines is not None else None
    return value or "unknown"


def isa_summary(path: str | None = None) -> str:
    """The :data:`ISA_FLAGS` the CPU has, then those it lacks: ``'avx2 fma (no avx512f, ...)'``.

    ``'unknown'`` where ``path`` cannot be read or lists no flags. The same text as
    ``tools/benchmark.py``'s ``cpu_isa`` for every readable cpuinfo with flags.
    """
    flags = cpu_flags(path)
    if not flags:
        return "unknown"
    have = [flag for flag in ISA_FLAGS if flag in flags]
    lacking = [flag for flag in ISA_FLAGS if flag not in flags]
    return " ".join(have) + (f" (no {', '.join(lacking)})" if lacking else "")


def isa_cap_without_bfloat16() -> str | None:
    """``'DNNL_MAX_CPU_ISA=AVX2'`` where that variable caps oneDNN below its native bfloat16 kernels, else None."""
    cap = os.environ.get(ISA_CAP_VARIABLE, "")
    return f"{ISA_CAP_VARIABLE}={cap}" if cap in ISA_CAPS_WITHOUT_BFLOAT16 else None


def missing_bfloat16_flags(path: str | None = None) -> list[str]:
    """The :data:`BFLOAT16_FLAGS` the CPU lacks, in that order; all of them where ``path`` tells nothing."""
    flags = cpu_flags(path)
    return [flag for flag in BFLOAT16_FLAGS if flag not in flags]


def bfloat16_unavailable(path: str | None = None) -> str | None:
    """Why oneDNN's native bfloat16 kernels cannot run here, in one line ending in ``'use float32'``; None
    where they can (every flag of :data:`BFLOAT16_FLAGS` and no lower ``DNNL_MAX_CPU_ISA`` cap)."""
    missing = missing_bfloat16_flags(path)
    if missing and not cpu_flags(path):
        return f"cannot read the CPU flags from {path or CPUINFO}; bfloat16 needs {', '.join(BFLOAT16_FLAGS)}; " \
               "use float32"
    if missing:
        if any(name in AVX512_CORE_FLAGS for name in missing):
            why = "oneDNN has no bfloat16 convolution without AVX-512"
        else:
            why = "oneDNN would emulate bfloat16, several times slower than float32"
        return f"this CPU ({cpu_model(path)}) lacks {', '.join(missing)}: {why}; use float32"
    cap = isa_cap_without_bfloat16()
    if cap:
        return f"{cap} caps oneDNN below its bfloat16 kernels (AVX512_CORE_BF16); unset it or use float32"
    return None


def has_bfloat16(path: str | None = None) -> bool:
    """True where oneDNN's native bfloat16 kernels can run (:func:`bfloat16_unavailable` gives no reason)."""
    return bfloat16_unavailable(path) is None


def require_bfloat16(flag: str = "--dtype bfloat16", path: str | None = None) -> None:
    """Raise :class:`UserError` in one line naming ``flag`` and :func:`bfloat16_unavailable`'s reason, unless
    oneDNN's native bfloat16 kernels can run."""
    reason = bfloat16_unavailable(path)
    if reason:
        raise UserError(f"{flag}: {reason}")
