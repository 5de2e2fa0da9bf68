# ocalab: the README's two commands are `sudo make run` and `sudo make test`.
# This Makefile never calls sudo; targets that touch the system check for root.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
APT_PKGS := mininet openvswitch-switch iperf3 iputils-ping traceroute ethtool tcpdump curl \
            iproute2 nginx-light wrk python3-venv python3-pip python3-dev gcc ffmpeg frr
# installed when the archive has it (Debian does; Ubuntu ships Chromium as a snap): the web
# view's browser tests drive it headless and skip, saying why, where it is missing
APT_OPTIONAL := chromium
STAMP := $(VENV)/.ocalab-installed
RELAY_BIN := build/ocalab-relay
# the web view's graph library, from npm at build time (the page loads nothing from the Internet);
# `apt` installs Debian's nodejs and npm only where no npm is on the PATH (a nodejs from
# elsewhere carries its own npm, and Debian's npm package conflicts with it)
WEB_VENDOR := ocalab/web/static/vendor/cytoscape.min.js
CYTOSCAPE := cytoscape@^3.30
# dash.js (DASH-IF's reference player) for the real-player page, the same way
DASHJS_VENDOR := ocalab/web/static/vendor/dash.all.min.js
DASHJS := dashjs@~4.7.4

.PHONY: setup run test test-unit clean bench doctor check-root apt ovs venv reliability web-assets

check-root:
	@if [ "$$(id -u)" != "0" ]; then \
	  echo "ocalab: this target needs root (network namespaces, OVS). Run: sudo make $(MAKECMDGOALS)" >&2; exit 1; fi

apt: check-root
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	command -v npm >/dev/null 2>&1 || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ]; then \
	  echo "ocalab setup: installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else echo "ocalab setup: Debian packages present"; fi
	@for p in $(APT_OPTIONAL); do dpkg -s $$p >/dev/null 2>&1 && continue; \
	  if apt-cache policy $$p 2>/dev/null | grep -q 'Candidate: [0-9]'; then \
	    echo "ocalab setup: installing $$p"; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$p; \
	  else echo "ocalab setup: $$p is not in this system's archive; the web view's browser tests will skip"; fi; \
	done
	@# --routing bgp starts its own zebra/bgpd per router; the system-wide frr service is not needed
	@if [ -e /etc/init.d/frr ]; then systemctl disable frr >/dev/null 2>&1 || update-rc.d frr disable >/dev/null 2>&1 || true; fi

ovs: check-root apt
	@if ! ovs-vsctl --timeout=5 show >/dev/null 2>&1; then \
	  echo "ocalab setup: starting Open vSwitch"; \
	  service openvswitch-switch start >/dev/null 2>&1 || /usr/share/openvswitch/scripts/ovs-ctl start --system-id=random; \
	  ovs-vsctl --timeout=10 show >/dev/null; \
	else echo "ocalab setup: Open vSwitch running"; fi

$(STAMP): pyproject.toml
	@test -x $(PY) || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=23"
	$(PY) -m pip install -q -e ".[test]"
	@touch $(STAMP)

# the relay's native hot path (emulation/relay.py execs it for constant-delay links)
$(RELAY_BIN): emulation/native/relay.c
	@mkdir -p build
	gcc -O2 -Wall -Wextra -Werror -o $@ $<

$(WEB_VENDOR):
	@mkdir -p build/npm $(dir $@)
	npm install --prefix build/npm --no-audit --no-fund --silent "$(CYTOSCAPE)"
	cp build/npm/node_modules/cytoscape/dist/cytoscape.min.js $@

$(DASHJS_VENDOR):
	@mkdir -p build/npm $(dir $@)
	npm install --prefix build/npm --no-audit --no-fund --silent "$(DASHJS)"
	cp build/npm/node_modules/dashjs/dist/dash.all.min.js $@

web-assets: $(WEB_VENDOR) $(DASHJS_VENDOR)

venv: apt $(STAMP) $(RELAY_BIN) $(WEB_VENDOR) $(DASHJS_VENDOR)

setup: check-root apt ovs venv
	@echo "ocalab setup: done. Try: $(VENV)/bin/ocalab doctor"

run: setup
	$(VENV)/bin/ocalab run placement --quick

test: setup
	$(VENV)/bin/ocalab clean --quiet
	$(PY) -m pytest tests -q

test-unit: $(STAMP) $(RELAY_BIN) $(WEB_VENDOR) $(DASHJS_VENDOR)
	$(PY) -m pytest tests -q -m "not emulation and not integration"

doctor: setup
	$(VENV)/bin/ocalab doctor

bench: setup
	$(VENV)/bin/ocalab bench links

reliability: setup
	$(VENV)/bin/ocalab bench reliability

clean: check-root
	@test -x $(VENV)/bin/ocalab && $(VENV)/bin/ocalab clean || echo "ocalab: not set up; nothing to clean"
