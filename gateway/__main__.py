from __future__ import annotations

import sys

from gateway._main import main

sys.exit(main())
