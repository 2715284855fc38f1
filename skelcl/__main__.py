import sys

from skelcl.cli import main

sys.exit(main())
