# The README's commands. Each sets up .venv by itself on a fresh machine.
#   make demo   run the live demo (camera -> panoptic node -> monitor) on the bundled model
#   make test   install everything and run the whole test suite (what CI runs)
#   make test-fast     the edit-loop tier: no slow or multi-process tests (a few minutes)
#   make test-release  everything, plus the release tier (torch.compile with inductor)
#   make dev    install once; afterwards `PYTHONPATH=. .venv/bin/pytest` tests source edits
#   make gpu-check  GPU readiness report: gpu tests + bench_gpu.py on CUDA, CPU stand-ins elsewhere
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip --disable-pip-version-check
PYTHON ?= python3

# torch/torchvision builds known to work together on this machine kind (see README).
ifeq ($(shell uname -m),aarch64)
TORCH_SPEC ?= torch==2.9.1 torchvision==0.24.1
else
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
endif

# rosidl's build needs (mirror of pyproject's [build-system].requires): installed into .venv so
# that rebuilds run without build isolation and reuse build/ (seconds, not a fresh download).
BUILD_REQS := scikit-build-core numpy catkin-pkg empy lark \
	ros-kilted-ament-package ros-kilted-ament-cmake ros-kilted-ament-cmake-python \
	ros-kilted-ament-cmake-include-directories ros-kilted-ament-cmake-ros-core \
	ros-kilted-rosidl-default-generators ros-kilted-rosidl-core-generators \
	ros-kilted-rosidl-generator-py ros-kilted-std-msgs ros-kilted-sensor-msgs

# What a change to should trigger a rebuild of the installed package.
PKG_SOURCES := pyproject.toml CMakeLists.txt package.xml $(wildcard msg/*.msg) \
	$(shell find panoptic_ros scripts launch config rviz -type f -not -path '*/__pycache__/*' 2>/dev/null)

# Network safety: every rclpy process stays on loopback (tests also pick their own domain id).
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export PIP_NO_INPUT := 1

PYTEST_ARGS ?=

.PHONY: test test-fast test-release demo dev lint bench gpu-check clean distclean

$(VENV)/.base: Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip>=24"
	$(PIP) install -q $(TORCH_SPEC)
	$(PIP) install -q $(BUILD_REQS)
	# PQ parity reference; its metadata pins numpy<2, which it does not need.
	$(PIP) install -q --no-deps panopticapi-lite
	# HOTA/IDF1 reference (test_video_metrics.py): its HOTA and Identity need numpy and scipy
	# only; its metadata would add opencv-python (a GUI build beside our headless one).
	$(PIP) install -q --no-deps trackeval==1.3.0
	touch $@

$(VENV)/.installed: $(VENV)/.base $(PKG_SOURCES)
	$(PIP) install -q --no-build-isolation ".[ros,hf,test]"
	touch $@

dev: $(VENV)/.installed

test: $(VENV)/.installed
	@set -o pipefail; $(VENV)/bin/pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; exit 1; fi; exit $$rc

test-fast: $(VENV)/.installed
	$(VENV)/bin/pytest -m "not slow and not release" $(PYTEST_ARGS)

test-release: $(VENV)/.installed
	$(VENV)/bin/pytest -m "release or not release" $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check panoptic_ros test bench

demo: $(VENV)/.installed
	$(VENV)/bin/panoptic-ros demo $(DEMO_ARGS)

bench: $(VENV)/.installed
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

gpu-check:
	scripts/gpu_check.sh

clean:
	rm -rf build install log .pytest_cache

distclean: clean
	rm -rf $(VENV)
