"""Command-line helpers: class names, devices, and the one-line error wrapper."""
import subprocess
import sys

import pytest

from config.cli import parse_class_names
from config.defaults import VOC_CLASSES
from config.devices import mxnet_has_cuda, parse_devices
from config.errors import UserError


def test_class_names_from_list_and_file(tmp_path):
    assert parse_class_names("a, b,c", 3) == ["a", "b", "c"]
    names = tmp_path / "x.names"
    names.write_text("cat\n\ndog\n")
    assert parse_class_names(str(names), 2) == ["cat", "dog"]
    with pytest.raises(UserError, match=r"--num-class 3 disagrees with --class-names .*x.names, which lists 2"):
        parse_class_names(str(names), 3)


def test_default_voc_names_give_way_to_another_class_count():
    assert len(parse_class_names(VOC_CLASSES, 20, default=VOC_CLASSES)) == 20
    assert parse_class_names(VOC_CLASSES, 3, default=VOC_CLASSES) is None
    with pytest.raises(UserError, match="--num-class 3 disagrees"):
        parse_class_names(VOC_CLASSES, 3)  # the user typed these names: a real disagreement


def test_devices():
    import mxnet as mx

    assert parse_devices("", 0) == [mx.cpu()]
    assert parse_devices(None, 3) == [mx.cpu(0), mx.cpu(1), mx.cpu(2)]
    with pytest.raises(UserError, match="--gpus 'x': expected a comma list"):
        parse_devices("x")
    if not mxnet_has_cuda():
        assert parse_devices(None) == [mx.cpu()]
        with pytest.raises(UserError, match="no GPU support.*mxnet-cu112"):
            parse_devices("0,1")


@pytest.mark.slow
def test_run_cli_prints_one_line_and_exits_2():
    code = ("from config.errors import UserError, run_cli\n"
            "def main():\n    raise UserError('--flag x: bad value')\n"
            "run_cli(main)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr == "error: --flag x: bad value\n"


def test_mxnet_errors_keep_their_reason_not_the_traceback_line():
    from config.errors import short_mxnet_message

    params = ('Traceback (most recent call last):\n  File "../src/ndarray/ndarray.cc", line 1860\n'
              "MXNetError: Check failed: fi->Read(data): Invalid NDArray file format")
    record = ('Traceback (most recent call last):\n  File "../3rdparty/dmlc-core/src/recordio.cc", line 71\n'
              "MXNetError: Check failed: stream_->Read(BeginPtr(*out_rec) + size, upper_align) == upper_align: "
              "Invalid RecordIO File upper_align=9792")
    assert short_mxnet_message(Exception(params)) == "Invalid NDArray file format"
    assert short_mxnet_message(Exception(record)) == "Invalid RecordIO File upper_align=9792"
    assert short_mxnet_message(Exception("MXNetError: out of memory")) == "out of memory"
    full_disk = ("MXNetError: Check failed: std: :fwrite(ptr, 1, size, fp_) == size: FileStream.Write incomplete")
    assert short_mxnet_message(Exception(full_disk)) == "FileStream.Write incomplete"
