"""python3 -m logwatch.daemon"""

import sys

from logwatch.daemon.app import main

sys.exit(main())
