"""A local web page: draw a digit or drop an image and watch both stages' networks and the frozen features they share.

``python -m lit_transfer demo``: picks the two checkpoints, loads them, serves the page and prints its address.
"""

from __future__ import annotations

import socket
import sys
from argparse import ArgumentError

import torch
from jsonargparse import ArgumentParser

from lit_transfer.errors import UserError
from lit_transfer.speed.cpu import flush_denormals

PROG = "python -m lit_transfer demo"


def serve(
    source: str | None = None,
    target: str | None = None,
    runs: str = "runs",
    host: str = "127.0.0.1",
    port: int = 7860,
) -> None:
    """Serve the page until Ctrl-C.

    Args:
        source: Stage one's checkpoint (trained on all layers). Default: the checkpoint stage two was trained from,
            else the newest stage-one ``last.ckpt`` under ``runs``.
        target: Stage two's checkpoint (frozen features, new head). Default: the newest stage-two ``last.ckpt``
            under ``runs`` (one trained from ``source`` when that is given).
        runs: The folder searched for runs' checkpoints (``last.ckpt`` files, newest first).
        host: The address to serve on: 127.0.0.1 is this machine only; 0.0.0.0 lets others on the network in
            (and lets them load any checkpoint file this machine can read, weights only).
        port: The port; 0 picks a free one.
    """
    from lit_transfer.demo.inference import load_model
    from lit_transfer.demo.runs import pick_pair

    source_path, target_path = pick_pair(runs, source, target)
    models = load_model(source_path), load_model(target_path)
    try:
        from lit_transfer.demo.app import Demo
    except ImportError as err:
        raise UserError(f"the demo needs Gradio ({err}): pip install -e '.[demo]'") from None
    demo = Demo(*models, runs_root=runs)
    if not port:  # a port no one listens on now (the OS's choice)
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
    try:
        demo.launch(host, port)
    except OSError as err:  # Gradio's "Cannot find empty port", or an address this machine does not have
        raise UserError(f"cannot serve on {host}:{port} ({err}): choose another --port (0 picks a free one)") from None
    print(f"lit_transfer demo: stage one {source_path}, stage two {target_path}", flush=True)
    print(f"lit_transfer demo: serving on http://{host}:{port} (Ctrl-C stops it)", flush=True)
    demo.blocks.block_thread()  # until Ctrl-C, which closes the server


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=(__doc__ or "").split("\n\n")[0], exit_on_error=False)
    parser.add_function_arguments(serve)
    return parser


def main(args: list[str] | None = None) -> None:
    flush_denormals()  # process-wide, before torch starts its threads (lit_transfer/speed/cpu.py)
    # One image at a time is far too little work to share between threads, and on a busy machine every parallel
    # op waits for a descheduled sibling thread: 160 ms per answer with 2 threads, 8 ms with 1 (benchmarks/RESULTS.md).
    torch.set_num_threads(1)
    try:
        config = build_parser().parse_args(args)
        serve(**config.as_dict())
    except UserError as err:
        sys.exit(f"lit_transfer demo: error: {err}")
    except ArgumentError as err:  # jsonargparse's parse errors, on one line
        sys.exit("lit_transfer demo: error: " + " ".join(line.strip() for line in str(err).splitlines()))
    except KeyboardInterrupt:
        print("lit_transfer demo: stopped")
