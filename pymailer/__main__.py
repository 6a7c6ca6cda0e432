"""C{python -m pymailer}: the admin command (L{pymailer.cli.main})."""

import sys

from pymailer.cli import main

if __name__ == "__main__":
    sys.exit(main())
