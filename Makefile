# Two entry points for a fresh Debian 12 / Python 3.11 machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
COLCON_OUT ?= /tmp/revavatar-colcon

.PHONY: setup demo test colcon ci clean

$(STAMP): requirements.txt requirements-nodeps.txt ros_ws/src/revavatar/setup.py
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install -q -e ros_ws/src/revavatar
	$(VENV)/bin/revavatar fetch-demo
	$(VENV)/bin/revavatar fetch-lpips --net all
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/revavatar demo --out out/demo

test: setup
	$(PY) -m pytest -q tests

# colcon and the ament build tooling come from Debian (no ROS distribution needed to build).
colcon:
	command -v colcon >/dev/null || (apt-get update -qq && apt-get install -y -qq colcon >/dev/null)
	rm -rf $(COLCON_OUT) && mkdir -p $(COLCON_OUT)
	cd ros_ws && colcon --log-base $(COLCON_OUT)/log build --packages-select revavatar \
	  --build-base $(COLCON_OUT)/build --install-base $(COLCON_OUT)/install
	test -f $(COLCON_OUT)/install/revavatar/share/revavatar/launch/headset.launch.py
	test -f $(COLCON_OUT)/install/revavatar/share/revavatar/package.xml

ci: test colcon

clean:
	rm -rf $(VENV) out
