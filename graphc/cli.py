"""The ``graphc`` command: train a model file, or show what graphc makes of it.

Every mistake a user can make from the command line (a bad flag, a missing
file, a model file without ``model``, absent data, a shape error in the model)
ends as one ``graphc: error: ...`` message and exit status 2, never a
traceback: the message already says what to fix.  So does a file that cannot
be read or written.  Ctrl-C (SIGINT), SIGTERM or SIGHUP during training saves
the exact state and exits with 128 + the signal's number (130, 143, 129), as
the shell reports a process the signal ended.

Each subcommand is a pair of functions, one adding its options and one
running it, so a new option is one line in the first.
"""
from __future__ import annotations

import argparse
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional, Sequence

from graphc import backends, optim
from graphc.errors import GraphcError
from graphc.explain.equations import equations_text
from graphc.draw.render import render
from graphc.parallel import Communicator, use
from graphc.parallel.launch import world
from graphc.compiler import pipeline
from graphc.compiler.compiled_step import CompiledStep
from graphc.train import TrainConfig, Trainer, load_model_file, load_splits
from graphc.train.show_graph import build_step, parse_shape
from graphc.train.trainer import DATASETS, MONITORS, TASKS

EXIT_USAGE = 2
EXIT_INTERRUPTED = 128 + signal.SIGINT
SHOW_VIEWS = ("forward", "grad", "step", "source")
DRAWN_VIEWS = ("forward", "grad", "autodiff", "step")
TEST_NAMES = {"accuracy": "accuracy", "mse": "mean squared error", "mae": "mean absolute error"}


class UsageError(GraphcError):
    """A command line argparse rejected."""


class _Parser(argparse.ArgumentParser):
    """Reports bad arguments as an exception, so they print as one line like every other error."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


# ------------------------------------------------------------------ arguments

def _add_model_file(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_file", metavar="MODEL_FILE",
                        help="Python file defining model(x, training), optionally loss(output, y) and defaults")


def _add_optimizer_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--optimizer", choices=sorted(optim.BY_NAME),
                        help="optimizer (default: the model file's, else sgd)")
    parser.add_argument("--lr", type=float, help="learning rate")


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    _add_model_file(parser)
    parser.add_argument("--dataset", choices=tuple(DATASETS), default="fashion-mnist")
    parser.add_argument("--data", metavar="DIR", help="folder holding the data set's four IDX files")
    _add_backend(parser)
    _add_optimizer_options(parser)
    parser.add_argument("--lr-decay", type=float, help="multiply the learning rate by this after each epoch")
    parser.add_argument("--batch-size", type=int, help="examples per step (default 128)")
    parser.add_argument("--epochs", type=int, help="passes over the training set (default 10)")
    parser.add_argument("--seed", type=int, help="seeds initial weights, split, batch order, noise (default 0)")
    parser.add_argument("--val-fraction", type=float,
                        help="share of the training examples held out for validation (default 0.1; 0 for none)")
    parser.add_argument("--patience", type=int,
                        help="stop after this many epochs without a better validation metric (--monitor), "
                             "then restore the best epoch's parameters")
    parser.add_argument("--monitor", choices=MONITORS,
                        help="the validation metric that chooses the best epoch (default val_loss)")
    parser.add_argument("--task", choices=TASKS,
                        help="what to report: accuracy (classification) or mean squared and absolute errors "
                             "(regression); default: told by the loss, else by the targets")
    parser.add_argument("--out", metavar="DIR", help="where checkpoints and history go (default runs/<model>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue exactly where the checkpoint in --out stopped (also after Ctrl-C)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run already in --out (without it such a folder is refused)")
    parser.add_argument("--limit", type=int, metavar="N", help="train on the first N training examples only")
    parser.add_argument("--max-loss", type=float,
                        help="stop when a training or evaluation loss exceeds this: diverged (default 1e6)")
    parser.add_argument("--check-numerics", action="store_true", default=None,
                        help="check every step for NaN/inf and name the node that made the first one "
                             "(slow; also GRAPHC_DEBUG_NANS=1)")


def _add_backend(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=backends.NAMES,
                        help="code generator: numpy (default), cupy (a CUDA GPU), or cuda-emulator "
                             "(the CUDA program run on the CPU)")


def _add_show_arguments(parser: argparse.ArgumentParser) -> None:
    _add_model_file(parser)
    _add_optimizer_options(parser)
    _add_backend(parser)
    parser.add_argument("--view", choices=SHOW_VIEWS + ("autodiff", "equations", "kernels", "all"),
                        help="which view to print, or to draw with --render (default: print all; "
                             "none with --passes or --render, which draws grad); kernels: the "
                             "generated kernel source (for --backend cupy, the CUDA translation unit)")
    parser.add_argument("--format", choices=("text", "latex"), default="text",
                        help="how --view equations is written (default text, in Unicode)")
    parser.add_argument("--render", metavar="FILE",
                        help="draw the view with Graphviz into FILE (.svg, .png or .pdf)")
    parser.add_argument("--collapse", nargs="?", const="all", metavar="LAYERS",
                        help="with --render, draw each layer (or the comma-separated LAYERS) as one box")
    parser.add_argument("--no-links", action="store_true",
                        help="with --render, leave out the dashed links from gradient nodes to their forward nodes")
    parser.add_argument("--input-shape", metavar="SHAPE",
                        help="one example's shape, such as 784 or 28,28, for models not about Fashion-MNIST")
    parser.add_argument("--dataset", choices=tuple(DATASETS),
                        help="take the input shape and size from this data set (default: Fashion-MNIST's)")
    parser.add_argument("--data", metavar="DIR", help="folder holding the data set's four IDX files")
    parser.add_argument("--dot", metavar="FILE", help="write the gradient graph in Graphviz DOT format")
    parser.add_argument("--passes", action="store_true",
                        help="print the program before and after each optimization phase, and the step's cost")


# ------------------------------------------------------------------ commands

def _trainer_options(args: argparse.Namespace) -> dict[str, Any]:
    """The trainer options given on the command line (those left out keep the model file's)."""
    names = ("optimizer", "lr", "lr_decay", "batch_size", "epochs", "seed", "val_fraction", "patience", "monitor",
             "task", "backend", "max_loss", "check_numerics")
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def run_train(args: argparse.Namespace) -> int:
    """Train in this process, or as one rank of a run started by ``mpirun -n K``."""
    communicator = world()
    try:
        with use(communicator):
            return _train(args, communicator)
    except BaseException as exc:
        if communicator.size == 1:
            raise
        _end_run(exc, communicator)
        raise


def _end_run(exc: BaseException, communicator: Communicator) -> None:
    """One rank failed: say why, and end every rank now rather than let the others wait for it."""
    sys.stdout.flush()  # a pipe to mpirun buffers it, and aborting does not flush
    if isinstance(exc, (GraphcError, OSError, KeyboardInterrupt)):
        print(f"graphc: error: rank {communicator.rank}: {exc}", file=sys.stderr, flush=True)
    else:
        traceback.print_exc()
    communicator.abort(EXIT_INTERRUPTED if isinstance(exc, KeyboardInterrupt) else EXIT_USAGE)


def _train(args: argparse.Namespace, communicator: Communicator) -> int:
    model_file = load_model_file(args.model_file)
    config = TrainConfig.from_options(model_file.defaults, _trainer_options(args))
    backends.get(config.backend).array_module()  # no GPU or no CuPy: say so before loading data
    out_dir = _out_dir(args.out, model_file.name)
    data = load_splits(args.dataset, args.data, config.val_fraction, config.seed, args.limit)
    trainer = Trainer(model_file.model, data, config, out_dir, loss=model_file.loss, communicator=communicator)
    result = trainer.run(resume=args.resume, overwrite=args.overwrite)
    if communicator.rank != 0:
        return 0
    print(f"history and checkpoint written to {out_dir}")
    for name, value in result.test_metrics.items():
        if name != "loss" and value is not None:
            print(f"test {TEST_NAMES[name]}: {value:.4f}")
    return 0


def _out_dir(option: Optional[str], model_name: str) -> Path:
    if option is None:
        return Path("runs") / model_name
    if not option.strip():
        raise UsageError("--out is empty; pass the folder for the run's checkpoint and history")
    return Path(option)


def run_show(args: argparse.Namespace) -> int:
    model_file = load_model_file(args.model_file)
    config = TrainConfig.from_options(model_file.defaults, _trainer_options(args))
    if args.format == "latex" and args.view != "equations":
        raise UsageError("--format latex applies to --view equations")
    if (args.collapse or args.no_links) and not args.render:
        raise UsageError(f"{'--collapse' if args.collapse else '--no-links'} applies to --render")
    if args.render and args.view not in DRAWN_VIEWS + (None,):
        raise UsageError(f"--render draws one of the views {', '.join(DRAWN_VIEWS)}, not {args.view}")
    shape = parse_shape(args.input_shape) if args.input_shape else None
    step = build_step(model_file, config, shape, args.dataset, args.data)
    view = args.view or ("none" if args.passes or args.render else "all")
    views = SHOW_VIEWS if view == "all" else () if view == "none" or args.render else (view,)
    if args.passes:
        _print_passes(step)
    for view in views:
        text = equations_text(step.program, tex=args.format == "latex") if view == "equations" else step.show(view)
        if view == "kernels":  # bare, so that it can be piped into a file that compiles (a .cu file)
            print(text.rstrip("\n"))
            continue
        print(f"==== {view} ====")
        print(text.rstrip("\n"))
        print()
    if args.render:
        collapse = True if args.collapse == "all" else tuple(args.collapse.split(",")) if args.collapse else ()
        render(step.draw(args.view or "grad", collapse, links=not args.no_links), args.render)
        print(f"{args.view or 'grad'} graph drawn in {args.render}")
    if args.dot:
        Path(args.dot).write_text(step.draw("autodiff").source + "\n")
        print(f"gradient graph written to {args.dot}")
    return 0


def _print_passes(step: CompiledStep) -> None:
    print(pipeline.stages_text(step))


COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "train": ("train a model file on Fashion-MNIST or MNIST", _add_train_arguments, run_train),
    "show": ("print or draw the forward graph, gradient graph, optimized step, generated source, "
             "or backprop as equations",
             _add_show_arguments, run_show),
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="graphc", description="Compile and train neural networks declared as graphs.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (description, add_arguments, run) in COMMANDS.items():
        sub = commands.add_parser(name, help=description, description=description)
        add_arguments(sub)
        sub.set_defaults(run=run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.run(args)
    except GraphcError as exc:
        print(f"graphc: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"graphc: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        print(f"graphc: {str(exc) or 'interrupted'}", file=sys.stderr)
        return 128 + getattr(exc, "signum", signal.SIGINT)


if __name__ == "__main__":
    sys.exit(main())
