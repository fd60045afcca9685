"""The tests run against the repository's ``config`` package, with the thread defaults it sets on import."""
import os

from helpers import ROOT

import config


def test_config_is_the_package_not_the_test_folder_of_that_name():
    # tests/config is a folder of tests without __init__.py: ahead of the root on sys.path it would be
    # imported as a namespace package, and config/__init__.py (the thread defaults) would never run
    assert config.__file__ == os.path.join(ROOT, "config", "__init__.py")


def test_thread_defaults_are_in_force_in_the_test_process():
    assert os.environ["MXNET_CPU_WORKER_NTHREADS"]  # set by config/__init__.py unless exported
    assert int(os.environ["OMP_NUM_THREADS"]) >= 1
