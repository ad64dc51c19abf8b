# logwatchd — set-up, tests, install and packaging on Debian 12 (run as root).
#
#   make run     install what the daemon needs, install it, run it in the foreground
#   make check   install everything the tests need (apt + .venv) and run the whole suite
#   make install / uninstall / deb / bench / venv / test / clean

SHELL := /bin/bash
.DEFAULT_GOAL := help

# ---------------------------------------------------------------------------------------
# apt packages. Extend these lists when a part of the daemon or a test needs one more.
# APT_RUN: what the daemon needs at run time (also the .deb's Depends/Recommends).
# rsyslog: Debian 12 logs to the journal only; rsyslog writes /var/log/mail.log, the
# default log file.
APT_RUN := python3 python3-venv python3-pip python3-yaml python3-netaddr python3-psutil \
           ca-certificates iptables ipset nftables postfix postfix-lmdb procps rsyslog \
           python3-prometheus-client python3-psycopg
# APT_TEST: what the test suite and `make deb` need on top of APT_RUN. pytest and hypothesis
# are Debian's (the venv sees them through --system-site-packages); python3-wheel lets the
# packaging test build a wheel offline.
APT_TEST := make logrotate iproute2 procps util-linux mount systemd man-db groff-base \
            debhelper dh-python dpkg-dev fakeroot python3-all python3-setuptools \
            pybuild-plugin-pyproject python3-pytest python3-hypothesis python3-wheel
# The peers the benchmarks run next to logwatchd: fail2ban-regex (bench/testrules_bench.py),
# sshguard and fail2ban (bench/drop_latency_bench.py; python3-pyinotify: fail2ban's inotify).
APT_TEST += sshguard fail2ban python3-pyinotify
# The policy service's peer (bench/policy_bench.py), the real SASL server the policy and
# accounting tests log in through (dovecot-core), the fleet's PostgreSQL and Postfix's pgsql:
# tables, and the browser the status page is tested in (Debian's Chromium, driven by Selenium).
APT_TEST += postfwd dovecot-core postgresql postfix-pgsql chromium chromium-driver python3-selenium
# ---------------------------------------------------------------------------------------

PYTHON ?= /usr/bin/python3
VENV := .venv
VENV_STAMP := $(VENV)/.logwatchd-stamp

# Where `make install` puts things (the .deb uses the Debian paths instead).
INSTALL_VENV := /opt/logwatchd
SBIN := /usr/sbin
RULES_DIR := /usr/share/logwatchd/rules
CONF_DIR := /etc/logwatchd
UNIT_DIR := /usr/local/lib/systemd/system
MAN_DIR := /usr/local/share/man/man8
DOC_DIR := /usr/local/share/doc/logwatchd
INSTALL_PIP := env PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
               $(INSTALL_VENV)/bin/pip install -q --no-build-isolation

# Build the .deb with Debian's own tools, not a python3 that happens to be first in PATH.
DEB_ENV := env PATH=/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin DEB_BUILD_OPTIONS=nocheck

export DEBIAN_FRONTEND := noninteractive

.PHONY: help deps-run deps-test venv test check install uninstall run deb bench clean

help:
	@sed -n 's/^#   //p' Makefile

# apt-get only when something is missing, so repeated runs are quick and work offline.
# Postfix is preseeded so its installer asks nothing; "Local only" (loopback, no relaying)
# rather than "No configuration" because postmap, hence the relay map, needs a main.cf.
# An already installed Postfix is left as it is.
define apt_install
	@missing=$$(for p in $(1); do \
	    dpkg-query -W -f='$${Status}\n' "$$p" 2>/dev/null | grep -q '^install ok installed$$' \
	    || echo "$$p"; done); \
	if [ -n "$$missing" ]; then \
	    echo "apt: installing" $$missing; \
	    echo "postfix postfix/main_mailer_type select Local only" | debconf-set-selections; \
	    apt-get update -q && \
	    apt-get install -y -q --no-install-recommends $$missing </dev/null; \
	else echo "apt: all of $(words $(1)) packages present"; fi
endef

deps-run:
	$(call apt_install,$(APT_RUN))

deps-test: deps-run
	$(call apt_install,$(APT_TEST))

# The stamp makes a second `make venv` a no-op until setup.cfg or pyproject.toml change.
venv: $(VENV_STAMP)

$(VENV_STAMP): setup.cfg pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv --system-site-packages $(VENV)
	$(VENV)/bin/pip install -q -e '.[test,fast]'
	touch $@

test: venv
	$(VENV)/bin/ruff check .
	@# pytest exits 5 when it collects nothing: that is a failure here, not a pass.
	@# make check installed every optional package and tool: a test that would skip for
	@# want of one fails instead (tests/needs.py; CI=true does the same).
	LOGWATCHD_STRICT=1 $(VENV)/bin/python -m pytest -q tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

check: deps-test
	$(MAKE) venv
	$(MAKE) test

# A venv on Debian's python3 that sees the apt-installed PyYAML/netaddr/psutil; pip only
# fetches hyperscan (not packaged in Debian 12). Without it (offline) the parser uses its re
# matcher. inotify is our own ctypes binding: nothing to fetch.
install:
	@if dpkg-query -W -f='$${Status}' logwatchd 2>/dev/null | grep -q 'ok installed'; then \
	    echo "the logwatchd .deb is installed; remove it (apt remove logwatchd) first" >&2; \
	    exit 1; fi
	test -x $(INSTALL_VENV)/bin/python || /usr/bin/python3 -m venv --system-site-packages $(INSTALL_VENV)
	$(INSTALL_PIP) --force-reinstall --no-deps .
	$(INSTALL_PIP) '.[fast]' || $(INSTALL_PIP) . \
	    || echo "warning: could not fetch hyperscan; the parser uses its re matcher" >&2
	rm -rf build
	ln -sf $(INSTALL_VENV)/bin/logwatchd $(SBIN)/logwatchd
	ln -sf $(INSTALL_VENV)/bin/logwatchctl $(SBIN)/logwatchctl
	install -d -m 0755 $(RULES_DIR) $(CONF_DIR) $(CONF_DIR)/rules.d $(UNIT_DIR) $(MAN_DIR) $(DOC_DIR)
	install -d -m 0700 /var/lib/logwatchd
	install -d -m 0750 /var/log/logwatchd
	install -m 0644 rules/*.yaml $(RULES_DIR)/
	@# Never overwrite the admin's configuration.
	test -e $(CONF_DIR)/logwatchd.yaml || install -m 0644 etc/logwatchd.yaml $(CONF_DIR)/logwatchd.yaml
	test -e $(CONF_DIR)/whitelist || install -m 0644 etc/whitelist $(CONF_DIR)/whitelist
	test -e /etc/logrotate.d/logwatchd || \
	    install -D -m 0644 debian/logwatchd.logrotate /etc/logrotate.d/logwatchd
	install -m 0644 logwatchd.service $(UNIT_DIR)/logwatchd.service
	install -m 0644 man/logwatchd.8 man/logwatchctl.8 $(MAN_DIR)/
	install -m 0644 inittab.example $(DOC_DIR)/
	@if [ -d /run/systemd/system ]; then systemctl daemon-reload; \
	    echo "systemd: systemctl enable --now logwatchd"; fi
	@echo "installed: $(SBIN)/logwatchd, $(SBIN)/logwatchctl, config in $(CONF_DIR)"

# Leaves the configuration (/etc/logwatchd and /etc/logrotate.d/logwatchd, both installed
# only when absent and maybe edited), the state and the logs in place.
uninstall:
	-@[ -d /run/systemd/system ] && systemctl disable --now logwatchd 2>/dev/null || true
	rm -f $(UNIT_DIR)/logwatchd.service $(MAN_DIR)/logwatchd.8 $(MAN_DIR)/logwatchctl.8
	rm -rf $(DOC_DIR) /usr/share/logwatchd $(INSTALL_VENV)
	@for f in logwatchd logwatchctl; do \
	    [ -L $(SBIN)/$$f ] && rm -f $(SBIN)/$$f || true; done

# The plain foreground form works with or without systemd (containers, inittab); its log
# goes to the terminal here (the service logs to syslog). Ctrl-C stops it.
# A Postfix installed with "No configuration" has no main.cf, and postmap (so the relay map)
# cannot work without one: give it what a fresh install gets here, "Local only". An existing
# main.cf is never touched.
run: deps-run install
	@if [ ! -e /etc/postfix/main.cf ]; then \
	    echo "postfix has no main.cf: configuring it as 'Local only' (dpkg-reconfigure postfix to change)"; \
	    echo "postfix postfix/main_mailer_type select Local only" | debconf-set-selections; \
	    dpkg-reconfigure -f noninteractive postfix </dev/null; \
	fi
	$(SBIN)/logwatchd --foreground --log stderr

# Output goes to ../ (the Debian way) and is copied to dist/; the tree is cleaned after.
deb:
	$(DEB_ENV) dpkg-buildpackage -us -uc -b
	mkdir -p dist
	cp ../logwatchd_$$(dpkg-parsechangelog -S Version)_all.deb dist/
	$(DEB_ENV) debian/rules clean >/dev/null
	@echo "built dist/logwatchd_$$(dpkg-parsechangelog -S Version)_all.deb"

bench: venv
	@# bench/*_bench.py are the benchmarks; other bench/*.py are their helper modules.
	@set -e; for b in bench/*_bench.py; do echo "== $$b"; $(VENV)/bin/python "$$b"; done

clean:
	-$(DEB_ENV) dh_clean 2>/dev/null
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .hypothesis
