#!/usr/bin/env python3
"""Re-take docs/status-page.png, the README's picture of the status page: a real logwatchd
(tests/webdaemon.py) with made-up counts, bans, grants (one from a hostile user name),
offenders, a suspended SASL ID and a rejected reload, shot by headless Chromium.

    .venv/bin/python docs/make_screenshot.py [OUT.png]
"""

from __future__ import annotations

import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def state(w: object) -> None:
    from webdaemon import stamp

    proc = w.proc      # type: ignore[attr-defined]
    proc.req(cmd="suspend", user="mallory@example.org")
    for i in range(1, 38):
        proc.ctl("ban", f"198.51.100.{i}")
    lines = []
    for i, n in ((7, 4), (8, 3), (9, 2), (10, 1), (11, 3)):
        lines += [f"{stamp()} mx postfix/smtpd[2345]: NOQUEUE: reject: RCPT from unknown"
                  f"[203.0.113.{i}]: 550 5.1.1 <u{k}@example.org>: Recipient address rejected: "
                  f"User unknown in local recipient table; from=<spam@example.net> "
                  f"to=<u{k}@example.org> proto=ESMTP helo=<guess>" for k in range(n)]
    for ip, user in (("192.0.2.21", "alice"), ("192.0.2.22", "bob"),
                     ("192.0.2.55", "<script>alert(1)</script>")):
        lines.append(f"{stamp()} mx dovecot: imap-login: Login: user=<{user}>, method=PLAIN, "
                     f"rip={ip}, lip=192.0.2.1, mpid=1, TLS, session=<s1>")
    proc.append(*lines)
    time.sleep(1.5)
    proc.settings["bans"]["bantime"] = -1          # a reload that is rejected: an error
    proc.write_config()
    proc.send(signal.SIGHUP)
    time.sleep(1)


def main() -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from webdaemon import WebDaemon

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "status-page.png"
    with tempfile.TemporaryDirectory(prefix="lwd-shot-") as tmp:
        w = WebDaemon(Path(tmp) / "d", accounting=True).start()
        try:
            state(w)
            opts = webdriver.ChromeOptions()
            opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
            for flag in ("--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-background-networking", "--disable-component-update",
                         "--disable-sync", "--no-first-run", "--window-size=1300,2150",
                         f"--user-data-dir={tmp}/chromium"):
                opts.add_argument(flag)
            driver = webdriver.Chrome(options=opts, service=Service(
                executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver"))
            try:
                driver.get(w.url + "/?span=day")
                driver.save_screenshot(str(out))
            finally:
                driver.quit()
        finally:
            w.stop()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
