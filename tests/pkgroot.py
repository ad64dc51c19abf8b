"""Throwaway roots and package builds for the packaging tests and the .deb benchmark.

A throwaway root is an overlay of / on a tmpfs inside a private mount namespace
(`unshare --mount`): dpkg and make write only to the tmpfs, which vanishes with the
namespace even if the test is killed. Everything the machine has installed is visible, so
no mirror is needed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SKIP_COPY = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__",
                                   ".pytest_cache", ".ruff_cache", ".hypothesis", ".pybuild")

# Runs inside `unshare --mount --fork`: builds the overlay root, copies files in, runs the
# steps chrooted, prints one JSON list of results. Argument lists only, no shell.
OVERLAY_SCRIPT = r"""
import json, os, shutil, subprocess, sys
spec = json.loads(sys.argv[1])
base = spec["base"]
def sh(*argv):
    subprocess.run(list(argv), check=True, capture_output=True)
sh("mount", "-t", "tmpfs", "-o", "mode=0700", "tmpfs", base)
for d in ("upper", "work", "root"):
    os.mkdir(os.path.join(base, d))
root = os.path.join(base, "root")
sh("mount", "-t", "overlay", "overlay", "-o",
   "lowerdir=/,upperdir=%s/upper,workdir=%s/work" % (base, base), root)
for api in ("proc", "sys", "dev"):
    sh("mount", "--rbind", "/" + api, os.path.join(root, api))
# A fresh /run: no systemd seen as running, so maintainer scripts start nothing.
sh("mount", "-t", "tmpfs", "tmpfs", os.path.join(root, "run"))
for src, dst in spec["copy"]:
    target = root + dst
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.isdir(src):
        shutil.copytree(src, target, symlinks=True)
    else:
        shutil.copy(src, target)
results = []
for step in spec["steps"]:
    try:
        p = subprocess.run(["chroot", root] + step, capture_output=True, text=True,
                           env=spec["env"], timeout=spec["timeout"], stdin=subprocess.DEVNULL)
        results.append({"argv": step, "rc": p.returncode, "out": p.stdout, "err": p.stderr})
    except subprocess.TimeoutExpired:
        results.append({"argv": step, "rc": -1, "out": "", "err": "timeout"})
print(json.dumps(results))
"""


@dataclass
class Step:
    """One command's outcome in the throwaway root."""

    argv: list[str]
    rc: int
    out: str
    err: str

    def explain(self) -> str:
        return f"{self.argv} -> rc={self.rc}\nstdout:\n{self.out}\nstderr:\n{self.err}"


def clean_env() -> dict[str, str]:
    return {"PATH": CLEAN_PATH, "HOME": "/root", "LANG": "C.UTF-8",
            "DEBIAN_FRONTEND": "noninteractive"}


def unshare_overlay(spec: dict[str, object], timeout: float) -> subprocess.CompletedProcess[str]:
    """OVERLAY_SCRIPT in a private mount namespace; --kill-child ends it with us."""
    return subprocess.run(["unshare", "--mount", "--fork", "--kill-child", "/usr/bin/python3",
                           "-c", OVERLAY_SCRIPT, json.dumps(spec)],
                          capture_output=True, text=True, timeout=timeout)


def overlay_works(tmp: Path) -> bool:
    """Whether this machine can make throwaway roots (root, unshare, overlayfs)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    tmp.mkdir()
    spec = {"base": str(tmp), "copy": [], "steps": [["true"]], "env": clean_env(), "timeout": 30}
    try:
        proc = unshare_overlay(spec, timeout=60)
        return proc.returncode == 0 and json.loads(proc.stdout)[0]["rc"] == 0
    except (subprocess.SubprocessError, ValueError, IndexError, KeyError):
        return False


def in_throwaway_root(base: Path, steps: list[list[str]], copy: list[tuple[str, str]],
                      timeout: float = 300) -> list[Step]:
    """Run each step chrooted in an overlay of / that is discarded afterwards."""
    base.mkdir()
    spec = {"base": str(base), "copy": copy, "steps": steps, "env": clean_env(), "timeout": timeout}
    proc = unshare_overlay(spec, timeout=timeout * len(steps) + 120)
    assert proc.returncode == 0, f"overlay root failed: {proc.stderr}"
    return [Step(**r) for r in json.loads(proc.stdout)]


def copy_tree(dest: Path) -> Path:
    """A copy of the work tree without venv, VCS and build output (builds write into it)."""
    shutil.copytree(REPO, dest, ignore=SKIP_COPY, symlinks=True)
    return dest


def build_deb(top: Path, version: str) -> Path:
    """dpkg-buildpackage on a copy of the work tree in top/; returns the one .deb built."""
    src = copy_tree(top / f"logwatchd-{version}")
    env = dict(clean_env(), DEB_BUILD_OPTIONS="nocheck")
    proc = subprocess.run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, env=env,
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise AssertionError(f"dpkg-buildpackage failed:\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-4000:]}")
    debs = sorted(top.glob("logwatchd_*_all.deb"))
    if len(debs) != 1:
        raise AssertionError(f"expected one .deb, found {debs}")
    return debs[0]
