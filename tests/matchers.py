"""The literal matchers the parser tests run with: re always, hyperscan where it is installed.

`make check` installs hyperscan and sets LOGWATCHD_STRICT=1 (tests/needs.py), so there a missing
hyperscan fails tests/test_literalscan.py instead of quietly testing one matcher only.
"""

from logwatch.parsing.literalscan import hyperscan_available

MATCHERS = ("re", "hyperscan") if hyperscan_available() else ("re",)
