"""``python -m compose_gen`` is ``compose-gen``."""

import sys

from compose_gen.cli import main

sys.exit(main())
