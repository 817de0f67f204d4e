"""``compose-gen``: validate, inspect, train, sample and evaluate from the shell.

Every expected failure (a bad spec, an unreadable checkpoint, a non-finite loss,
a broken plugin) ends with a one-line-per-problem message and a non-zero exit
status, never a traceback from inside the library.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import signal
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TextIO, TypeVar

from compose_gen.compiler import SamplingFailed, advise, advise_paths, assumed_fields, build_graph, unknown_player_names
from compose_gen.compiler.build import build_data
from compose_gen.registry import make_catalogue
from compose_gen.runtime import CheckpointError, EvaluationFailed, NonFiniteLoss, Run, build, resolve_device
from compose_gen.core.files import json_text, read_json, write_text_atomic
from compose_gen.runtime.checkpoint import list_checkpoints
from compose_gen.runtime.distributed import launched_rank, launched_world_size
from compose_gen.runtime.layout import EVALUATION_FILE, SPEC_FILE, step_folder_name
from compose_gen.runtime.logging import tell
from compose_gen.spec import Spec, SpecError, SpecWarning, load_spec
from compose_gen.spec.model import DEVICE_PATTERN

__all__ = ["main"]

T = TypeVar("T", int, float)


@contextmanager
def _spec_warnings_said() -> Iterator[list[str]]:
    """Print each :class:`SpecWarning` once, as ``warning: file:line: path: message`` on stderr; yield the list of those said.

    Under torchrun only process 0 prints them: every process builds the same spec, so each would say the same.
    """
    said: list[str] = []
    printing = launched_rank() == 0
    with warnings.catch_warnings():
        warnings.simplefilter("always", SpecWarning)
        show_others = warnings.showwarning

        def show(message: Any, category: type[Warning], *where: Any, **options: Any) -> None:
            if not issubclass(category, SpecWarning):
                show_others(message, category, *where, **options)
            elif str(message) not in said:
                said.append(str(message))
                if printing:
                    tell(f"warning: {message}")

        warnings.showwarning = show
        yield said


def _validate(args: argparse.Namespace) -> int:
    catalogue = make_catalogue()
    failed = 0
    verdicts = sys.stderr if args.resolved else args.results  # with --resolved, stdout holds the YAML alone
    for file in args.files:
        shown = "<stdin>" if file == "-" else file  # as the spec's error lines name it
        note = ""
        try:
            with _spec_warnings_said() as said:
                spec = load_spec(file, args.set, catalogue)
                if args.static:  # the graph with the batch fields the spec reads assumed, not the data's
                    fields = assumed_fields(spec)
                    build_graph(spec, fields)
                    unknown = unknown_player_names(spec)
                    if unknown:
                        raise SpecError(unknown, spec.source)
                    advise(spec, data=None)
                    advise_paths(spec)
                    note = f" (static: assumes the data give {', '.join(fields)})" if fields else " (static)"
                else:
                    build(spec, "cpu")
                _caution_device(spec)
        except SpecError as error:
            failed += 1
            print(error, file=verdicts)
        else:
            if args.strict and said:
                failed += 1
                print(f"{shown}: {len(said)} warning(s), which --strict counts as problems", file=verdicts)
                continue
            print(f"{shown}: ok{note}", file=verdicts)
            if args.resolved:
                if len(args.files) > 1:  # one YAML stream of documents, which yaml.safe_load_all reads back
                    print(f"--- # {shown}", file=args.results)
                print(spec.to_yaml(), end="", file=args.results)
    return 1 if failed else 0


def _caution_device(spec: Spec) -> None:
    """Warn of a spec's ``device`` that this machine has not: validate checks on the CPU, so it would pass, and train fail."""
    try:
        resolve_device(spec.model.device)
    except RuntimeError as error:
        spec.warn(("device",), f"{error} (validate checks on the CPU; train here would fail: train with --device cpu)")


def _graph(args: argparse.Namespace) -> int:
    from compose_gen.compiler.draw import draw

    spec = load_spec(args.spec, args.set)
    fields = tuple(build_data(spec).train.fields)  # the data alone: a spec whose dry run fails is drawn too, to see why
    draw(build_graph(spec, fields).graph, Path(args.output), spec.name)
    print(f"wrote {args.output}", file=args.results)
    return 0


def _plugins(args: argparse.Namespace) -> int:
    from compose_gen.registry.listing import describe, render, select

    catalogue = make_catalogue()
    listing = describe(catalogue)
    names = list(dict.fromkeys(args.names))  # `plugins elbo elbo` describes elbo once
    if args.json:
        print(json_text(select(listing, names), indent=1), file=args.results)  # standard JSON: an infinite default is null
    else:
        render(listing, names, args.results)
    return 0


def _schema(args: argparse.Namespace) -> int:
    from compose_gen.spec.schema import spec_schema

    left_out: list[str] = []
    text = json_text(spec_schema(make_catalogue(), left_out), indent=1)  # standard JSON, which editors read
    for problem in left_out:  # one plugin's field that pydantic cannot describe leaves the others' schema whole
        print(f"warning: left out of the schema: {problem}", file=sys.stderr)
    if args.output:
        write_text_atomic(Path(args.output), text)  # a failed write (a full disk) leaves the file there before
        print(f"wrote {args.output}", file=args.results)
    else:
        print(text, file=args.results)
    return 0


def _train(args: argparse.Namespace) -> int:
    with _terminated_as_interrupted():  # from the start: a SIGTERM while building killed the process without a word
        try:
            run = _start(args)
        except KeyboardInterrupt:
            if launched_rank() == 0:
                kept = f"{args.resume} is as it was: compose-gen train --resume {args.resume}" if args.resume else "nothing was written"
                tell(f"interrupted while starting, before training; {kept}")
            raise
        return _trained(run, args)


def _start(args: argparse.Namespace) -> Run:
    """The run ``train`` trains: a new one, or the one ``--resume`` continues (``args.steps`` set to its end)."""
    progress = not args.no_progress
    steps = [f"train.steps={args.steps}"] if args.steps is not None else []  # on a resume, the schedule stretches to the new end
    if args.resume:
        if args.spec or args.out:
            given = f"SPEC {args.spec}" if args.spec else f"--out {args.out}"
            instead = "change the recorded spec with --set, or train the SPEC into a new folder with --out" if args.spec else "drop --out"
            raise _Misuse(
                f"compose-gen train: --resume continues {args.resume} with the spec it records, so {given} would not be used; {instead}"
            )
        run = Run.load(args.resume, args.device, [*args.set, *steps], progress=progress)
        args.steps = run.spec.model.train.steps
        _check_until(args.until, run.trainer.step, args.steps)
        if run.trainer.step >= args.steps:
            end = "" if steps else (", the end of its train.steps" if run.trainer.step == args.steps else f", past its train.steps ({args.steps})")
            unevaluated = "" if _evaluated_at(run) else f" (it was not evaluated there, stopped before: compose-gen evaluate {run.dir})"
            raise _Misuse(f"compose-gen train: {run.dir} is at step {run.trainer.step} already{end}; give --steps beyond it{unevaluated}")
    else:
        if not args.spec:
            raise _Misuse("compose-gen train: give a SPEC, or --resume RUN_DIR")
        spec = load_spec(args.spec, [*args.set, *steps])
        _check_until(args.until, 0, spec.model.train.steps)
        run = Run.create(spec, args.out, args.device, progress)
    return run


def _trained(run: Run, args: argparse.Namespace) -> int:
    main_process = run.trainer.dist.is_main
    if main_process:
        tell(f"run folder: {run.dir}")
    try:
        logs = run.train(args.until or args.steps)
    except EvaluationFailed as failure:  # trained and saved; what the metrics that worked measured is printed too
        if main_process:
            print(json_text({"step": run.trainer.step, **failure.training, **failure.results}), file=args.results)
        raise
    except KeyboardInterrupt:  # training stops at a signal itself: this one came after it, or is a second one
        if main_process:
            tell(_interrupted(run, args.until or run.spec.model.train.steps))
        raise
    except (SamplingFailed, OSError):  # after training (a picture it could not write), or in it (a log line)
        if main_process and _saved_at(run, args.until or run.spec.model.train.steps):
            tell(f"step {run.trainer.step} is trained and saved; this failed after, while sampling or evaluating: compose-gen evaluate {run.dir}")
        raise
    stopped = run.trainer.interrupted
    if stopped and main_process:
        tell(f"stopped by {stopped} at step {run.trainer.step}; checkpoint saved; continue with: compose-gen train --resume {run.dir}")
    if main_process:  # the means of the log window that ends at this step, then the evaluation at this step
        evaluated = run.evaluation if run.evaluation is not None and run.evaluation["step"] == run.trainer.step else {}
        print(json_text({"step": run.trainer.step, **logs, **evaluated}), file=args.results)
    if not stopped:
        return 0
    return 128 + (signal.Signals[stopped].value if stopped in signal.Signals.__members__ else signal.SIGTERM.value)


class _Terminated(KeyboardInterrupt):
    """SIGTERM outside the training loop (which stops at a signal itself): while sampling or evaluating after it."""


@contextmanager
def _terminated_as_interrupted() -> Iterator[None]:
    """SIGTERM (a batch scheduler's, ``timeout``'s) raises :class:`_Terminated` inside, so that the user is told what
    is saved, as at Ctrl-C, rather than the process dying without a word; one ignored when the process began stays so."""

    def terminate(signum: int, frame: object) -> None:
        raise _Terminated

    previous = None
    with contextlib.suppress(ValueError):  # not the main thread
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN:
            previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _check_until(until: int | None, step: int, total: int) -> None:
    if until is not None and not step < until <= total:
        raise _Misuse(f"compose-gen train: --until {until} must lie after step {step} and at most at train.steps ({total})")


def _one_process(command: str) -> None:
    """``sample`` and ``evaluate`` are one process's work: under torchrun every process would do all of it, and write alike."""
    if launched_world_size() > 1:
        raise _Misuse(f"compose-gen {command}: run it as one process, without torchrun (only train runs data-parallel)")


def _sample(args: argparse.Namespace) -> int:
    _one_process("sample")
    run = Run.load(args.run_dir, args.device, args.set, progress=False, checkpoint=args.checkpoint, weights_only=True)
    try:  # classes this model does not draw are a mistake of the command line, said as argparse's are
        run.model.labels(args.n, run.class_labels(args.classes))
    except ValueError as error:
        raise _Misuse(f"compose-gen sample: --class: {error}") from None
    path = run.save_samples(args.output, args.n, args.temperature, args.classes)
    print(f"wrote {path}", file=args.results)
    return 0


def _evaluated_at(run: Run) -> bool:
    """Whether the folder's evaluation is of the run's step, or the run is not evaluated at its end."""
    if not run.spec.model.train.evaluate_at_end:
        return True
    try:
        return read_json(run.dir / EVALUATION_FILE).get("step") == run.trainer.step
    except (OSError, ValueError, AttributeError):
        return False


def _saved_at(run: Run, end: int) -> bool:
    """Whether ``run`` trained to round ``end`` and its checkpoint of that round is written."""
    saved = list_checkpoints(run.dir)
    return run.trainer.step == end and bool(saved) and saved[-1].name == step_folder_name(end)


def _interrupted(run: Run, end: int) -> str:
    """What a Ctrl-C that training did not absorb left saved: one while sampling or evaluating after training, or a
    second one, which aborts at once, perhaps while the checkpoint the first asked for was being written."""
    step, saved = run.trainer.step, list_checkpoints(run.dir)
    if saved and saved[-1].name == step_folder_name(step):
        if step == end:
            return f"interrupted after training, while sampling or evaluating; step {step} is saved: compose-gen evaluate {run.dir}"
        return f"interrupted at step {step}, which is saved; continue with: compose-gen train --resume {run.dir}"
    aborted = f"aborted at step {step}, without saving it"
    if not saved:  # a resume of a folder with logs but no checkpoint is refused: there is nothing to go on from
        return f"{aborted}; no checkpoint was written, so start again: compose-gen train {run.dir / SPEC_FILE} --out NEW_DIR"
    return f"{aborted}; the newest checkpoint is {saved[-1].name}; continue with: compose-gen train --resume {run.dir}"


def _evaluate(args: argparse.Namespace) -> int:
    _one_process("evaluate")
    run = Run.load(args.run_dir, args.device, args.set, progress=False, checkpoint=args.checkpoint, weights_only=True)
    # An override, or an older checkpoint than the newest, is for this command: the folder keeps its own results and pictures.
    apart = "the spec was changed with --set" if args.set else run.behind or run.changed
    pictures = args.out or (run.dir / "evaluation-set" if apart else None)
    try:
        results = run.evaluate(pictures, record=apart is None)
    except EvaluationFailed as failure:
        _print_results(failure.results, args.json, args.results)  # the metrics that worked, and `failed`; the error follows on stderr
        raise
    finally:
        if apart:
            print(f"not recorded in {run.dir / EVALUATION_FILE}: {apart}", file=sys.stderr)
            print(f"files the metrics write go to {run.metric_files or pictures}", file=sys.stderr)
    _print_results(results, args.json, args.results)
    return 0


def _print_results(results: dict[str, object], as_json: bool, out: TextIO) -> None:
    if as_json:
        print(json_text(results), file=out)
    else:
        for key, value in results.items():
            print(f"{key:40s} {value}", file=out)


def _runs(args: argparse.Namespace) -> int:
    from compose_gen.runtime.listing import list_runs

    folder = Path(args.folder)
    if not folder.is_dir():
        print(f"error: {folder}: {'not a folder' if folder.exists() else 'no such folder'} (give the folder that holds run folders)", file=sys.stderr)
        return 1
    rows = list(list_runs(folder))
    for row in rows:
        print(row, file=args.results)
    if not rows:
        print(f"no run folders in {folder}", file=sys.stderr)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="compose-gen", description="Compose, train, sample and evaluate generative models from specs.")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, handler: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(handler=handler, subcommand_parser=p)  # whose usage a mistake in its options shows
        return p

    def overrides(p: argparse.ArgumentParser) -> None:
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a spec value, e.g. train.steps=100")

    def checkpoint(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--checkpoint", metavar="WHICH", help="best (by train.best_metric), or a checkpoint folder such as step-00000040 "
            "(default: the newest readable one)"
        )

    p = command("validate", _validate, "check specs: schema, references, cycles, kinds and shapes (dry run)")
    p.add_argument("files", nargs="+")
    p.add_argument("--static", action="store_true", help="skip building the data and the dry run")
    p.add_argument("--strict", action="store_true", help="fail a spec that builds with warnings, as for an error")
    p.add_argument("--resolved", action="store_true", help="print each valid spec with every default filled in, as a run records it")
    overrides(p)

    p = command("graph", _graph, "draw a spec's graph as PNG, SVG or DOT")
    p.add_argument("spec")
    p.add_argument("-o", "--output", required=True)
    overrides(p)

    p = command("plugins", _plugins, "list the registered types by kind; with names, each type's parameters")
    p.add_argument("names", nargs="*", metavar="NAME", help="types to detail (e.g. elbo), or a kind to list (e.g. bijector)")
    p.add_argument("--json", action="store_true", help="the types (every type, or the NAMEs and kinds given) with kind, plugin, doc and parameters, as JSON")

    p = command("schema", _schema, "write the JSON Schema of the spec language")
    p.add_argument("-o", "--output")

    p = command(
        "train",
        _train,
        "train a spec into a run folder (or resume one); under `torchrun --nproc_per_node=N -m compose_gen train SPEC` "
        "each process trains on its slice of the global batch",
    )
    p.add_argument("spec", nargs="?", help="the spec file (YAML or JSON) to train; not with --resume")
    p.add_argument(
        "--steps", type=_at_least(1, int), help="rounds to train: sets train.steps (with --resume, train until this round; the schedule stretches to it)"
    )
    p.add_argument(
        "--until", type=_at_least(1, int), metavar="K",
        help="stop at round K, sampled and evaluated there, the schedule still running to train.steps; --resume continues it",
    )
    p.add_argument("--out", help="run folder (default runs/NAME-TIMESTAMP); must not hold checkpoints yet")
    p.add_argument("--device", type=_device_name, help="auto, cpu, cuda, cuda:N or mps (default: the spec's)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run exactly from its newest readable checkpoint")
    p.add_argument("--no-progress", action="store_true", help="print neither the progress bar nor the log lines (metrics.jsonl is still written)")
    overrides(p)

    p = command("sample", _sample, "write samples of a trained run: a picture (image grid, or scatter plot of 2D points), or arrays")
    p.add_argument("run_dir")
    p.add_argument("-n", type=_at_least(1, int), default=64, help="how many samples (default 64)")
    p.add_argument(
        "-o", "--output", required=True, help="file to write: a picture (.png unless it names another format), or .npy/.npz arrays: for image data, "
        "display pixels in [0, 1] of shape (N, C, H, W); for other data, the data's raw units"
    )
    p.add_argument(
        "--temperature",
        type=_at_least(0.0, float),
        default=1.0,
        help="scale of the latent noise's standard deviation (0: no noise, a Gaussian prior's mode; a sampler that draws x from its decoder, "
        "`mean: false`, still draws it; a VQ-VAE's uniform codes take none)",
    )
    p.add_argument(
        "--class", dest="classes", action="append", metavar="K",
        help="draw only class K, a label or a class name (repeat for several, one per column), from a model that samples by class",
    )
    p.add_argument("--device", type=_device_name, help="auto, cpu, cuda, cuda:N or mps (default: the spec's)")
    checkpoint(p)
    overrides(p)

    p = command("evaluate", _evaluate, "evaluate a trained run with its spec's metrics")
    p.add_argument("run_dir")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object (NaN as null) instead of a line per result")
    p.add_argument("--device", type=_device_name, help="auto, cpu, cuda, cuda:N or mps (default: the spec's)")
    checkpoint(p)
    p.add_argument(
        "--out", type=Path, help="folder for the files metrics write (grids, plots); default: the run folder, or its evaluation-set/ with --set"
    )
    overrides(p)

    p = command("runs", _runs, "list run folders with their spec, step and final metrics")
    p.add_argument("folder", nargs="?", default="runs")
    return parser


def _at_least(low: T, kind: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse type: a finite number of ``kind``, at least ``low``."""

    def parse(text: str) -> T:
        value = kind(text)
        if not (math.isfinite(value) and value >= low):  # type: ignore[arg-type, operator]
            raise argparse.ArgumentTypeError(f"must be a finite number of at least {low}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its message
    return parse


def _device_name(text: str) -> str:
    """An argparse type: a device name as a spec's ``device:`` takes it (whether this machine has it is the run's to say)."""
    if not re.fullmatch(DEVICE_PATTERN, text):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}: give cpu, cuda, cuda:N, mps or auto")
    return text


class _Misuse(Exception):
    """A command given options that contradict each other or the run: a usage error, exit status 2 as argparse's."""


def main(argv: Sequence[str] | None = None) -> int:
    parser, argv = _parser(), list(sys.argv[1:] if argv is None else argv)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said with the usage of the parser whose part of the command line holds them
        before = argv[: argv.index(args.command)] if args.command in argv else []
        (parser if set(unknown) & set(before) else args.subcommand_parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    args.results = sys.stdout  # what a command answers; anything else printed to stdout (a plugin's print) goes to stderr
    try:
        launched_rank()  # a malformed RANK or WORLD_SIZE, said before the handlers below, which read them too
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        with _spec_warnings_said(), contextlib.redirect_stdout(sys.stderr):
            return args.handler(args)
    except (SpecError, _Misuse) as error:
        if launched_rank() == 0:  # every process of a torchrun reads the same spec and command line: said once
            print(error, file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as Unix tools do
        with contextlib.suppress(OSError, ValueError):  # so that Python's flush at exit does not fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (CheckpointError, NonFiniteLoss, OSError, RuntimeError, ValueError) as error:
        rank = launched_rank()
        print(f"error: {f'process {rank}: ' if rank else ''}{error}", file=sys.stderr)
        return 1
    except _Terminated:
        return 128 + signal.SIGTERM.value
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
