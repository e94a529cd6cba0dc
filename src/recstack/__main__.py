"""``python -m recstack``: the recstack command line."""

import sys

from recstack.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
