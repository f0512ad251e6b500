"""``python -m logship``: see logship/cli.py."""

import sys

from logship.cli import main

sys.exit(main())
