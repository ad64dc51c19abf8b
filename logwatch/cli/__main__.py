"""python3 -m logwatch.cli: logwatchctl."""

import sys

from logwatch.cli.ctl import main

sys.exit(main())
