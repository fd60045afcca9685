"""Detect objects in images, a folder, a video or the camera, and draw the results.

    python demo.py --network toy --data-shape 256 --prefix model/ssd_ --epoch 10 \
        --class-names data/synth/synth.names --images a.jpg,b.jpg --out-dir output/demo
    python demo.py --network faster_rcnn_small --prefix model/rcnn_ --epoch 10 \
        --class-names data/synth/synth.names --images a.jpg --out-dir output/demo

With the run config train.py saves beside the checkpoint, ``--prefix`` and
``--epoch`` are enough: ``python demo.py --prefix model/ssd_toy_128 --epoch 10 --images a.jpg``.
Faster R-CNN takes its image sizes and pixel statistics from
``<prefix>-rcnn.json`` and detects one image at a time.
"""
import argparse
import glob
import os
import sys

import config  # noqa: F401  (thread defaults before mxnet loads)
from config.cli import ArgumentParser, add_pixel_args, parse_known_given, refuse_given, require_writable_dir
from config.defaults import DEMO as D
from config.errors import UserError, run_cli
from config.fileio import atomic_write, commit, temporary_path
from config.train_config import RCNNConfig
from evaluate.evaluate_rcnn import add_rcnn_test_args

LOSSLESS_EXTENSIONS = (".png", ".bmp")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description="Single-shot detection network demo",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("--network", default=D["network"], help="network name")
    a("--images", default=D["images"], help="comma separated image paths")
    a("--dir", dest="dir", default=None, help="folder of images (overrides --images)")
    a("--ext", default=D["ext"], help="image extension in --dir")
    a("--epoch", type=int, default=D["epoch"], help="epoch of the trained model")
    a("--batch-size", type=int, default=D["batch_size"], help="images per forward pass")
    a("--prefix", default=None,
      help=f"model prefix: the run's <prefix>-ssd.json / -rcnn.json supplies the other settings; a trailing "
           f"'_' appends <network>_<data-shape>, for Faster R-CNN <network> "
           f"(SSD: {D['prefix']}, Faster R-CNN: {RCNNConfig.prefix}_)")
    a("--cpu", action="store_true", help="use the CPU")
    a("--gpu", dest="gpu_id", type=int, default=None, help="GPU id (default: GPU 0 if mxnet has CUDA, else CPU)")
    a("--data-shape", type=int, default=D["data_shape"], help="input side length")
    add_pixel_args(p, D)
    a("--thresh", type=float, default=D["thresh"], help="detections below this score are not shown")
    a("--nms", dest="nms_thresh", type=float, default=D["nms"], help="non-maximum suppression threshold")
    a("--force", dest="force_nms", action="store_true", default=True,
      help="suppress overlapping boxes of different classes (default)")
    a("--no-force", dest="force_nms", action="store_false", help="suppress only within a class")
    a("--nms-topk", type=int, default=400, help="detections kept per image before NMS")
    a("--no-timer", dest="show_timer", action="store_false", help="do not print the time taken")
    a("--deploy", dest="deploy_net", action="store_true", help="load the model written by tools/deploy.py")
    a("--class-names", default=D["class_names"], help="comma separated class names, or a file")
    a("--camera", action="store_true", help="read frames from camera 0 ('q' stops)")
    a("--video", default=None, help="annotate this video file (written to --out-dir, or beside it)")
    a("--frame-resize", default=None, help="resize camera/video frames: a factor, or 'width,height'")
    a("--out-dir", default=None, help="write annotated images here")
    a("--dtype", choices=("float32", "bfloat16"), default="float32",
      help="bfloat16: convolutions in bfloat16 with the float32 weights (SSD; CPUs with avx512_bf16)")
    a("--onnx", metavar="FILE", default=None,
      help="run a model written by tools/export_onnx.py with onnxruntime (its metadata supplies the settings)")
    add_rcnn_test_args(p)
    return p


def image_list(args) -> list:
    if args.dir:
        if not os.path.isdir(args.dir):
            raise UserError(f"--dir {args.dir}: not a directory")
        ext = args.ext if args.ext.startswith(".") else "." + args.ext
        paths = sorted(glob.glob(os.path.join(glob.escape(args.dir), "*" + ext)))
        if not paths:
            raise UserError(f"--dir {args.dir}: no *{ext} images found")
        return paths
    paths = [p.strip() for p in args.images.split(",") if p.strip()]
    if not paths:
        raise UserError("--images: no image given")
    return paths


def parse_frame_resize(value):
    """None, a scale factor, or a (width, height) pair."""
    if value is None:
        return None
    try:
        if "," in value:
            width, height = (int(v) for v in value.split(","))
            return width, height
        return float(value)
    except ValueError:
        raise UserError(f"--frame-resize {value!r}: expected a factor such as 0.5 or 'width,height'") from None


def resize_frame(frame, how):
    import cv2

    if how is None:
        return frame
    if isinstance(how, tuple):
        return cv2.resize(frame, how)
    return cv2.resize(frame, None, fx=how, fy=how)


def jpeg_truncated(path: str) -> bool:
    """A JPEG file without its end-of-image marker: libjpeg decodes it with a grey lower part and
    only an anonymous warning, so the file is named here."""
    with open(path, "rb") as f:
        if f.read(2) != b"\xff\xd8":
            return False
        f.seek(max(0, os.path.getsize(path) - 64))
        tail = f.read().rstrip(b"\x00\r\n ")
    return not tail.endswith(b"\xff\xd9")


def run_images(detector, paths, args, class_names) -> int:
    """Detect in each image; returns how many could not be read."""
    import cv2

    from evaluate.detector import draw_detections, format_detections

    failed = 0
    if args.out_dir:
        os.makedirs(args.out_dir, exist_ok=True)
    readable = []
    for path in paths:
        image = cv2.imread(path, cv2.IMREAD_COLOR) if os.path.isfile(path) else None
        if image is None:
            reason = "file not found" if not os.path.isfile(path) else "cannot be decoded as an image"
            print(f"error: {path}: {reason}", file=sys.stderr)
            failed += 1
        else:
            if jpeg_truncated(path):
                print(f"warning: {path}: the JPEG is cut short (no end marker); its lower part is missing "
                      "and detections there are meaningless", file=sys.stderr)
            readable.append((path, image))
    for start in range(0, len(readable), args.batch_size):
        chunk = readable[start:start + args.batch_size]
        all_dets, seconds = detector.timed_detect([image for _, image in chunk], args.thresh)
        for (path, image), dets in zip(chunk, all_dets):
            timer = f" ({seconds * 1000 / len(chunk):.1f} ms)" if args.show_timer else ""
            print(f"{path}: {len(dets)} detections{timer}")
            print(format_detections(dets, class_names))
            if args.out_dir:
                stem, ext = os.path.splitext(os.path.basename(path))
                # a lossless input stays lossless; anything else is written as JPEG
                ext = ext.lower() if ext.lower() in LOSSLESS_EXTENSIONS else ".jpg"
                out_path = os.path.join(args.out_dir, stem + ext)
                annotated = draw_detections(image, dets, class_names)
                atomic_write(out_path, lambda tmp, annotated=annotated: cv2.imwrite(tmp, annotated))
    if args.out_dir:
        print(f"annotated images: {args.out_dir}")
    return failed


def open_stream(args):
    """The ``cv2.VideoCapture`` of ``--camera`` or ``--video``, opened before the model is loaded
    so that a missing camera or file is one line of error and nothing else."""
    import cv2

    if args.video and not os.path.isfile(args.video):
        raise UserError(f"--video {args.video}: file not found")
    # OpenCV logs a WARN/ERROR line per backend it tries; the UserError below says it once
    log_level = cv2.getLogLevel()
    cv2.setLogLevel(0)
    try:
        capture = cv2.VideoCapture(0 if args.camera else args.video)
    finally:
        cv2.setLogLevel(log_level)
    if not capture.isOpened():
        raise UserError("--camera: no camera could be opened (device 0)" if args.camera
                        else f"--video {args.video}: cannot be opened as a video")
    return capture


def run_stream(detector, capture, args, class_names) -> None:
    """Annotate a video file, or show the camera until 'q'; ``capture`` comes from :func:`open_stream`."""
    import cv2

    from evaluate.detector import draw_detections

    how = parse_frame_resize(args.frame_resize)
    writer, out_path, frames = None, None, 0
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frame = resize_frame(frame, how)
            (dets,), seconds = detector.timed_detect([frame], args.thresh)
            annotated = draw_detections(frame, dets, class_names)
            frames += 1
            if args.camera:
                cv2.imshow("detections", annotated)
                if cv2.waitKey(1) & 0xFF == ord("q"):
                    break
                continue
            if writer is None:
                out_dir = args.out_dir or os.path.dirname(os.path.abspath(args.video))
                os.makedirs(out_dir, exist_ok=True)
                out_path = os.path.join(out_dir, os.path.splitext(os.path.basename(args.video))[0] + "_det.mp4")
                fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
                height, width = annotated.shape[:2]
                fourcc = cv2.VideoWriter_fourcc(*"mp4v")
                writer = cv2.VideoWriter(temporary_path(out_path), fourcc, fps, (width, height))
            writer.write(annotated)
            if args.show_timer:
                print(f"frame {frames}: {len(dets)} detections ({seconds * 1000:.1f} ms)")
    finally:
        capture.release()
        if writer is not None:
            writer.release()
            if frames:
                commit(temporary_path(out_path), out_path)
            elif os.path.exists(temporary_path(out_path)):
                os.remove(temporary_path(out_path))
    if out_path:
        print(f"annotated video: {out_path} ({frames} frames)")


def check_inputs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """One input (--images, --dir, --video or --camera), and only the flags that apply to it."""
    stream = "--camera" if args.camera else "--video" if args.video else ""
    if args.camera and args.video:
        raise UserError("--video: --camera reads the camera; give one of them")
    if stream:
        refuse_given(parser, args, ("images", "dir", "ext"), f"{stream} is the input; give one")
        refuse_given(parser, args, ("batch_size",), f"{stream} frames are detected one at a time")
    else:
        refuse_given(parser, args, ("frame_resize",), "resizes --camera/--video frames")
        if args.dir:
            refuse_given(parser, args, ("images",), "--dir is the input; give one of them")
        else:
            refuse_given(parser, args, ("ext",), "picks the images of --dir")
    if args.camera:
        refuse_given(parser, args, ("out_dir",), "--camera frames are shown, not written")
    if args.cpu:
        refuse_given(parser, args, ("gpu_id",), "--cpu runs on the CPU; give one of them")


def load_detector(settings, args: argparse.Namespace, ctx):
    """The SSD ``Detector`` or Faster R-CNN ``RCNNImageDetector`` of the checkpoint ``settings`` names."""
    if settings.is_rcnn:
        from evaluate.evaluate_rcnn import RCNNImageDetector, load_rcnn_weights

        arg_params, aux_params = load_rcnn_weights(settings.rcnn, settings.prefix, args.epoch, settings.num_classes)
        return RCNNImageDetector(settings.rcnn, settings.num_classes, arg_params, aux_params, ctx)
    from evaluate.detector import Detector
    from evaluate.ssd_model import load_test_model

    symbol, arg_params, aux_params = load_test_model(
        settings.network, settings.prefix, args.epoch, settings.data_shape, settings.num_classes,
        settings.nms_thresh, settings.force_suppress, settings.nms_topk, args.deploy_net, settings.dtype)
    return Detector(symbol, arg_params, aux_params, settings.data_shape, settings.mean_pixels, settings.std_pixels,
                    batch_size=args.batch_size, ctx=ctx)


def main(argv=None) -> int:
    parser = build_parser()
    args = parse_known_given(parser, argv)
    if args.batch_size <= 0:
        raise UserError(f"--batch-size {args.batch_size}: must be positive")
    check_inputs(parser, args)
    if args.onnx:
        from evaluate.onnx_detector import refuse_with_onnx

        refuse_with_onnx(parser, args)
    if args.out_dir:
        require_writable_dir("--out-dir", os.path.join(args.out_dir, "demo.jpg"))
    if args.camera or args.video:
        paths, capture = None, open_stream(args)
    else:
        paths, capture = image_list(args), None

    import mxnet as mx

    from config.devices import mxnet_has_cuda
    from evaluate.run_settings import resolve_inference

    if args.cpu or (args.gpu_id is None and not mxnet_has_cuda()):
        ctx = mx.cpu()
    else:
        from config.devices import parse_devices

        ctx = parse_devices(str(args.gpu_id or 0), flag="--gpu")[0]
    if args.onnx:  # the model's metadata, not a run config, describes it
        from evaluate.onnx_detector import OnnxDetector, onnx_settings

        settings, detector = onnx_settings(args.onnx), OnnxDetector(args.onnx, batch_size=args.batch_size)
    else:
        settings = resolve_inference(parser, args, D["prefix"], D["class_names"], RCNNConfig.prefix + "_")
        detector = load_detector(settings, args, ctx)
    if paths is None:
        run_stream(detector, capture, args, settings.class_names)
        return 0
    failed = run_images(detector, paths, args, settings.class_names)
    if failed:
        print(f"error: {failed} of {len(paths)} images could not be read", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    run_cli(main)
