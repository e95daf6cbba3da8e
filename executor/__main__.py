from __future__ import annotations

import sys

from executor._main import main

sys.exit(main())
