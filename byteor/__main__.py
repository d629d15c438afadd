from __future__ import annotations

import sys

from byteor.cli import main

sys.exit(main())
