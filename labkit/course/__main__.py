"""python -m labkit.course build|grade"""

import sys

from labkit.course.cli import main

sys.exit(main())
