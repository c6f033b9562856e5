"""Command line: ``python -m sketchcore_torch demo [--epochs N] [--device D] [--seed S]``."""
import argparse
import sys
import time

__all__ = ["main"]


def _int_in(low, high, expected, out_of_range=None):
    """argparse type: an integer in [low, high); the messages name what was expected."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not low <= value < high:
            raise argparse.ArgumentTypeError(
                f"{out_of_range or 'expected ' + expected}, got {value}")
        return value
    return parse


_positive_int = _int_in(1, float("inf"), "a positive integer")
_non_negative_int = _int_in(0, float("inf"), "an integer >= 0")
_seed = _int_in(0, 2 ** 63, "an integer seed", "seed must be in [0, 2**63)")


def build_parser():
    """The ``argparse`` parser of ``python -m sketchcore_torch``."""
    parser = argparse.ArgumentParser(
        prog="python -m sketchcore_torch",
        description="sketchcore_torch command line tools.")
    sub = parser.add_subparsers(dest="command", metavar="command")
    demo = sub.add_parser(
        "demo", help="train a standard and two sketched MLPs and compare them",
        description="The tutorial's comparison: a standard MLP, the tutorial's default "
                    "SketchedMLP and a compressed SketchedMLP (784 -> [512, 256, 128] -> 10) "
                    "trained on its synthetic data set (5000 samples, batch 64, Adam 1e-3); "
                    "prints parameters, test accuracy and time per epoch.")
    demo.add_argument("--epochs", type=_positive_int, default=10,
                      help="training epochs per model (default: 10, as in the tutorial)")
    demo.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                      help="where to train (default: auto = cuda if available, else cpu)")
    demo.add_argument("--seed", type=_seed, default=0,
                      help="seed of the data, initial weights and sketches (default: 0)")
    demo.add_argument("--samples", type=_positive_int, default=5000,
                      help="synthetic data set size, 80%% train / 20%% test (default: 5000)")
    demo.add_argument("--batch-size", type=_positive_int, default=64,
                      help="batch size (default: 64)")
    demo.add_argument("--threads", type=_non_negative_int, default=1,
                      help="torch CPU threads (default: 1, robust on a shared machine; "
                           "0 = torch's default)")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def main(argv=None):
    """Entry point; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "demo":
        parser.print_help()
        return 2
    from sketchcore_torch import _demo

    try:
        device = _demo.resolve_device(args.device)
    except ValueError as exc:
        parser.error(str(exc))
    if args.samples < 20:
        parser.error(f"--samples must be >= 20, got {args.samples}")
    print(f"sketchcore_torch demo: {args.samples} samples, 784 -> [512, 256, 128] -> 10, "
          f"batch {args.batch_size}, Adam lr 1e-3, {args.epochs} epochs, device {device}, "
          f"seed {args.seed}, {args.threads or 'default'} thread(s)", flush=True)
    start = time.perf_counter()
    results = _demo.run_demo(epochs=args.epochs, device=device, seed=args.seed,
                             n_samples=args.samples, batch_size=args.batch_size,
                             progress=not args.no_progress, threads=args.threads)
    print()
    print(_demo.format_table(results))
    if min(r.accuracy for r in results) >= 0.99:
        print("(the tutorial's synthetic classes are well separated: every model classifies "
              "them almost perfectly; the comparison is in parameters and time)")
    print(f"\ntotal time {time.perf_counter() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
