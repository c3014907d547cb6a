import sys

from runa.cli.main import main

sys.exit(main())
