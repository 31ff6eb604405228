"""``python -m kubeinfer.operator``: the same as ``kubeinfer operator``."""

import argparse
import sys

from kubeinfer.operator.cli import add_arguments, run

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m kubeinfer.operator")
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
