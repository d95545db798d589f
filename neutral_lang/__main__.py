"""``python -m neutral_lang lint|fmt|explain ...``: the same command line as ``neutral-lang``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
