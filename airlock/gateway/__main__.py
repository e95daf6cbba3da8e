from __future__ import annotations

import sys

from airlock.gateway._main import main

sys.exit(main())
