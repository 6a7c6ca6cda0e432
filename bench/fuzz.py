"""
Fuzz the protocol listeners for minutes: SMTP (port 25), submission (AUTH
then BDAT), IMAP and POP3, with the generator and checks of
C{tests/wirefuzz.py} (the suite's C{tests/test_fuzz.py} runs the same for
a few seconds).  The real protocol classes run in this process on string
transports (no sockets), a fresh server per batch of inputs.

Prints, per protocol, how many inputs ran and what was found (stall, crash,
traceback, bad reply, deaf), with the first input of each kind to
reproduce it, and the most CPU one session took.  Exit status 1 if anything
was found.

    .venv/bin/python bench/fuzz.py [--seconds 120] [--protocol smtp|submission|imap|pop3] [--seed N]
"""

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from wireharness import PROTOCOLS  # noqa: E402
from wirefuzz import Fuzzer  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120,
                        help="how long to fuzz each protocol (default 120)")
    parser.add_argument("--protocol", choices=PROTOCOLS, action="append",
                        help="a protocol to fuzz (repeatable; default all four)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    found = False
    for name in args.protocol or PROTOCOLS:
        fuzzer = Fuzzer(name, seed=args.seed).runFor(args.seconds)
        print(fuzzer.report(), flush=True)
        found = found or bool(fuzzer.findings)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
