"""``python -m s4g`` is the ``s4g`` command."""

import sys

from s4g.cli import main

sys.exit(main())
