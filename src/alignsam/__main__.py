import sys

from alignsam.cli import main

sys.exit(main())
