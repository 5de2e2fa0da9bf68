# ocalab: the README's two commands are `sudo make run` and `sudo make test`.
# This Makefile never calls sudo; targets that touch the system check for root.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
APT_PKGS := mininet openvswitch-switch iperf3 iputils-ping traceroute ethtool tcpdump curl \
            iproute2 nginx-light python3-venv python3-pip python3-dev gcc frr
STAMP := $(VENV)/.ocalab-installed
RELAY_BIN := build/ocalab-relay

.PHONY: setup run test test-unit clean bench doctor check-root apt ovs venv reliability

check-root:
	@if [ "$$(id -u)" != "0" ]; then \
	  echo "ocalab: this target needs root (network namespaces, OVS). Run: sudo make $(MAKECMDGOALS)" >&2; exit 1; fi

apt: check-root
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "ocalab setup: installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else echo "ocalab setup: Debian packages present"; fi
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

venv: apt $(STAMP) $(RELAY_BIN)

setup: check-root apt ovs venv
	@echo "ocalab setup: done. Try: $(VENV)/bin/ocalab doctor"

run: setup
	$(VENV)/bin/ocalab run placement --quick

test: setup
	$(VENV)/bin/ocalab clean --quiet
	$(PY) -m pytest tests -q

test-unit: $(STAMP) $(RELAY_BIN)
	$(PY) -m pytest tests -q -m "not emulation and not integration"

doctor: setup
	$(VENV)/bin/ocalab doctor

bench: setup
	$(VENV)/bin/ocalab bench links

reliability: setup
	$(VENV)/bin/ocalab bench reliability

clean: check-root
	@test -x $(VENV)/bin/ocalab && $(VENV)/bin/ocalab clean || echo "ocalab: not set up; nothing to clean"
