# make demo / make test do the whole set-up on a fresh machine, then run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch is installed first: an unpinned torch would make pip
# pick a multi-GB CUDA build here. pyproject.toml keeps torch>=2.2 for users.
TORCH_SPEC ?= torch==2.13.0
# Then the project with its dev and ray extras (`gossip sweep` runs on Ray, and its
# test runs a real local Ray).
STAMP := $(VENV)/.installed

.PHONY: setup test demo bench docs clean system-deps

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev,ray]"
	touch $(STAMP)

# systemd-analyze checks the unit files in the tests; install it when missing
# (Debian package 'systemd'; needs root, as on CI here).
system-deps:
	@command -v systemd-analyze >/dev/null 2>&1 || { \
	  echo "installing systemd (for systemd-analyze)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null) \
	  || echo "warning: could not install systemd-analyze"; }

setup: $(STAMP) system-deps

# ruff's pyflakes rules (unused or undefined names) first: seconds, and they catch
# what a merge or a move leaves behind.
test: setup
	$(VENV)/bin/ruff check --select F,E9 gossipd peer_sampling cli tests bench
	$(PY) -m pytest -q

demo: setup
	$(VENV)/bin/gossip demo

# Generated documentation: the example config from the setting declarations
# (tests/test_daemon_config.py fails when the committed copy is stale), and the
# outputs README.md shows, by running the commands it shows (a few minutes).
docs: setup
	$(VENV)/bin/gossipd --print-config-example > systemd/gossipd.toml
	$(PY) docs/gen_readme_outputs.py

bench: setup
	$(PY) bench/simulation.py --sizes 1000:100,10000:100
	$(PY) bench/learner.py
	$(PY) bench/wire.py
	$(PY) bench/daemon.py
	$(PY) bench/startup.py
	$(PY) bench/light_daemon.py
	$(PY) bench/daemon_data.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
