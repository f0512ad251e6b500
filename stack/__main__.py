"""``python -m stack``: see stack/run.py."""

import sys

from stack.run import main

sys.exit(main())
