"""The `gatelab` command line.

Each command lives in its own module, which provides `add_arguments(parser)` and
`run(args) -> int`; only the module of the command being run is imported, so
`gatelab --help` is fast and a command's dependencies load only when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from gatelab import __version__
from gatelab.errors import UsageError

# command -> (module, one-line help)
COMMANDS = {
    "train": ("gatelab.lm.train_cmd", "train a character-level language model on text"),
    "sample": ("gatelab.lm.sample_cmd", "sample text from a trained run"),
    "inspect": ("gatelab.viz.inspect_cmd", "write an HTML report of what the gates do on a text"),
    "demo": ("gatelab.lm.demo_cmd", "train on the default corpus, sample, and write the gate report"),
    "experiment": (
        "gatelab.experiments.cli", "reproduce a claim about the LSTM (gradient flow, memory, noise, cost)"
    ),
    "bench": ("gatelab.bench", "time gatelab.nn against torch.nn on this machine"),
}


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gatelab",
        description="gatelab: gated recurrent networks you can see through.",
        epilog="Run `gatelab COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"gatelab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        _top_parser().parse_args(argv or ["--help"])
        return 2
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"gatelab {name}", description=COMMANDS[name][1])
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        return int(module.run(args) or 0)
    except UsageError as err:
        print(f"gatelab {name}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gatelab {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
