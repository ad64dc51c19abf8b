"""A submission server for end-to-end tests (issue 15): Postfix + Dovecot SASL + check_sasl_access.

    with submission_rig({"alice": "pw", "victim": "pw2"}) as rig:
        with smtp_session(rig.inst, rig.client("victim", ip=3)) as s:   # XCLIENT + AUTH
            sent = send_mail(s, "victim@example.org", ["a@remote.example"])
        rig.inst.wait_log(f"{sent.queue_id}: removed")     # the log a logwatchd follows:
        rig.inst.maillog_path                              # (client=, sasl_username=, from=,
                                                           #  to=, status=sent, removed)
        rig.set_sasl_access({"victim": "HOLD suspended"})  # what the daemon would write
        ...                                                # next message: inst.held()

- Authenticated clients relay to any domain (smtpd_relay_restrictions: permit_sasl_authenticated
  before reject_unauth_destination); unauthenticated ones only to `inbound` (relay_domains).
- `rig.sasl_access` (TYPE:PATH, default hash: in the rig's directory, created empty so Postfix
  can open it) is in smtpd_recipient_restrictions: point the daemon's
  accounting.sasl_access_map / policy.sasl_access_map at it, or write it with
  set_sasl_access() (real postmap). Run postmap with `rig.postfix_env()` (MAIL_CONFIG).
- Every message goes to the discard transport: `removed` follows at once.
- rig.client(user, ip=N): a Client with XCLIENT ADDR 198.51.100.N (any number of distinct
  client addresses without namespaces) and SMTP AUTH as `user`; name="..." for a reverse name.
- MailOptions fields (policy=PolicyHook(...), recipient_checks, extra) pass through `options`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dovecot_helpers import DovecotSasl, dovecot_sasl
from postfix_helpers import (
    Client,
    MailOptions,
    PostfixInstance,
    age_config,
    postfix_env,
    postfix_instance,
)


@dataclass
class SubmissionRig:
    """The running pieces: Postfix, Dovecot, the check_sasl_access table and a postmap config."""

    inst: PostfixInstance
    sasl: DovecotSasl
    sasl_access: str          # TYPE:PATH
    config_dir: str           # a main.cf for postmap (MAIL_CONFIG)
    users: dict[str, str]

    def postfix_env(self) -> dict[str, str]:
        return postfix_env(self.config_dir)

    def client(self, user: str | None = None, ip: int = 10, name: str | None = None,
               helo: str = "client.invalid") -> Client:
        """XCLIENT as 198.51.100.`ip` (1-254), logged in as `user` when given."""
        login = (user, self.users[user]) if user is not None else None
        return Client(addr=f"198.51.100.{ip}", name=name, helo=helo, login=login)

    def set_sasl_access(self, entries: dict[str, str]) -> None:
        """Rewrite the check_sasl_access table (login name -> access(5) action) with postmap."""
        kind, _, path = self.sasl_access.partition(":")
        text = "".join(f"{user} {action}\n" for user, action in entries.items())
        tmp = Path(path + ".src")
        tmp.write_text(text)
        # postmap writes PATH.db/.lmdb from the source named on its command line; build
        # beside the table, then rename the source into place for humans reading it.
        subprocess.run(["postmap", f"{kind}:{tmp}"], check=True, env=self.postfix_env(),
                       capture_output=True, text=True, timeout=60)
        suffix = {"hash": ".db", "lmdb": ".lmdb"}[kind]
        os.replace(str(tmp) + suffix, path + suffix)
        os.replace(tmp, path)


@contextmanager
def submission_rig(users: dict[str, str], inbound: str = "dest.test",
                   table_type: str = "hash",
                   options: MailOptions | None = None) -> Iterator[SubmissionRig]:
    """Start Dovecot and Postfix for these users; everything is stopped and removed after."""
    top = tempfile.mkdtemp(prefix="lw-mailrig-")
    os.chmod(top, 0o755)
    try:
        cfdir = os.path.join(top, "pfcf")
        os.mkdir(cfdir)
        Path(cfdir, "main.cf").write_text("compatibility_level = 3.6\n")
        age_config(cfdir)
        table = f"{table_type}:{top}/sasl-access"
        Path(top, "sasl-access").write_text("")
        subprocess.run(["postmap", table], check=True, env=postfix_env(cfdir),
                       capture_output=True, text=True, timeout=60)
        with dovecot_sasl(users) as sasl:
            opts = dataclasses.replace(options or MailOptions(), sasl=sasl, sasl_access=table,
                                       relay_domains=inbound)
            with postfix_instance(options=opts) as inst:
                yield SubmissionRig(inst, sasl, table, cfdir, dict(users))
    finally:
        shutil.rmtree(top, ignore_errors=True)
