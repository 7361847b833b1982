"""``python -m minise.assignments ...``"""

import sys

from .cli import main

sys.exit(main())
