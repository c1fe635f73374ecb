"""Command line: `chargepoint run`, `demo`, `sim ...`."""
import sys


def main(argv=None) -> int:
    print("not yet", file=sys.stderr)
    return 1
