"""python3 -m logwatch.daemon"""

import sys

from logwatch.daemon.main import main

sys.exit(main())
