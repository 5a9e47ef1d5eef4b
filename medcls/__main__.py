"""``python -m medcls``: see :mod:`medcls.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
