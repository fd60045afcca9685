"""Defaults in one place, and the process settings mxnet reads at import.

Importing this package sets thread defaults *before* mxnet is imported by any
other package of the toolkit (each of them imports ``config`` first):

* ``OMP_NUM_THREADS`` defaults to the machine's core count. mxnet's own default
  uses fewer threads than there are cores, which halves convolution speed on a
  2-core machine (see README, "Performance").
* ``MXNET_CPU_WORKER_NTHREADS`` defaults to 2: with a single CPU worker a Python
  CustomOp (``proposal_target``) can deadlock (apache/mxnet#4713).

Values the user already exported are left alone.
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
os.environ.setdefault("MXNET_CPU_WORKER_NTHREADS", "2")
# mxnet's cuDNN autotune spends minutes on each new shape; the rcnn README
# advises turning it off because image shapes vary per batch.
os.environ.setdefault("MXNET_CUDNN_AUTOTUNE_DEFAULT", "0")
