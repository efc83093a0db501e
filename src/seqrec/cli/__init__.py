"""``seqrec`` command line: one module per command, each a thin layer over library calls.

Results go to stdout; progress bars and logs go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys

from seqrec.errors import SeqrecError

COMMANDS = ("data", "train", "quickstart", "evaluate", "recommend", "profile", "tune", "serve")


def build_parser() -> argparse.ArgumentParser:
    from importlib import import_module

    import seqrec

    parser = argparse.ArgumentParser(
        prog="seqrec", description="Sequential recommendation: train, evaluate, recommend.")
    parser.add_argument("--version", action="version", version=f"seqrec {seqrec.__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        import_module(f"seqrec.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except SeqrecError as e:
        print(f"seqrec: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("seqrec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
