import sys

from featkit.cli import main

sys.exit(main())
