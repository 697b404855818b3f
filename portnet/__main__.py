"""``python -m portnet``: the same as the ``portnet`` command."""

import sys

from .cli import main

sys.exit(main())
