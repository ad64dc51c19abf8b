"""Read Postfix's mynetworks with `postconf -x -h mynetworks` (argument list, never a shell)."""

from __future__ import annotations

import logging
import shutil

from logwatch.effectors import runner
from logwatch.engine.whitelist import normalize_net

log = logging.getLogger("logwatchd.postfixconf")


def parse_mynetworks(text: str) -> tuple[list[str], list[str]]:
    """Split a mynetworks value into normalised CIDRs and the entries that were skipped.

    Postfix separates entries by whitespace or commas and writes IPv6 as [2001:db8::]/64;
    lookup tables (hash:/..., /file/name) cannot be expanded here and are skipped.
    """
    cidrs: list[str] = []
    skipped: list[str] = []
    for entry in text.replace(",", " ").split():
        try:
            cidrs.append(normalize_net(entry))
        except ValueError:
            skipped.append(entry)
    return list(dict.fromkeys(cidrs)), skipped


def read_mynetworks(config_dir: str | None = None, postconf: str = "postconf",
                    timeout: float = 10.0) -> list[str] | None:
    """mynetworks as a list of CIDRs; None when postconf is absent or fails."""
    # Daemons and CI may run with a PATH lacking /usr/sbin, where Debian installs postconf.
    exe = shutil.which(postconf) or shutil.which(postconf, path="/usr/sbin:/usr/local/sbin")
    if exe is None:
        log.warning("action=mynetworks status=unavailable postconf=%s", postconf)
        return None
    argv = [exe]
    if config_dir is not None:
        argv += ["-c", config_dir]
    # -x expands $name references ("mynetworks = 127.0.0.0/8 $office_nets"), which -h alone
    # would return verbatim and so lose.
    argv += ["-x", "-h", "mynetworks"]
    try:
        proc = runner.run(argv, timeout=timeout)
    except runner.CommandFailed as exc:
        log.warning("action=mynetworks status=failed rc=%d stderr=%r", exc.returncode,
                    exc.stderr.strip()[:500])
        return None
    except runner.ToolError as exc:
        log.warning("action=mynetworks status=failed error=%r", str(exc.__cause__ or exc))
        return None
    cidrs, skipped = parse_mynetworks(proc.stdout)
    for entry in skipped:
        log.warning("action=mynetworks status=skipped entry=%r (not an address or CIDR)", entry)
    return cidrs
