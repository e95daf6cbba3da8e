from __future__ import annotations

import sys

from airlock.executor._main import main

sys.exit(main())
