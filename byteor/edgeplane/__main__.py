"""``python -m byteor.edgeplane``: the ``edgeplane`` command."""

from __future__ import annotations

import sys

from byteor.edgeplane.cli import main

if __name__ == "__main__":
    sys.exit(main())
