import sys

from emedge_core.cli import main

sys.exit(main())
