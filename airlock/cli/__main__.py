from __future__ import annotations

import sys

from airlock.cli import main

sys.exit(main())
