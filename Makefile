# lamella: build, demo, tests, benches.
#   make demo   build (release) and run the whole pipeline on the built-in simulated dataset
#               under mpirun on all local cores; results in demo-out/
#   make test   unit + integration + MPI + Python interop tests (what CI runs)
#   make bench  criterion benches (results in target/criterion)
#   make test-slurm  the slurm/ templates on a real single-node SLURM started on this machine
#               (scripts/slurm-local.sh; installs slurm-wlm + munge; see slurm/README.md)
SHELL := /bin/bash
CARGO ?= cargo
NPROC ?= $(shell nproc 2>/dev/null || echo 2)
VENV ?= .venv
PY := $(abspath $(VENV))/bin/python
# OpenMPI refuses to run as root and to place more ranks than cores unless told.
export OMPI_ALLOW_RUN_AS_ROOT := 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM := 1
export OMPI_MCA_rmaps_base_oversubscribe := 1
# as the lamella binary does at start: atomic renames, not flock, keep HDF5 files consistent
export HDF5_USE_FILE_LOCKING ?= FALSE
MPIRUN ?= mpirun
MPIRUN_FLAGS ?= --oversubscribe --bind-to none
DEMO_OUT ?= demo-out

.PHONY: all deps venv build release demo test test-rust test-slurm bench lint fmt clean

all: release

deps:
	@bash scripts/deps.sh

$(VENV)/.stamp: scripts/requirements-test.txt
	@python3 -m venv $(VENV)
	@$(VENV)/bin/pip install -q --disable-pip-version-check -r scripts/requirements-test.txt
	@touch $@

venv: $(VENV)/.stamp

build: deps
	$(CARGO) build

release: deps
	$(CARGO) build --release

demo: release
	@mkdir -p $(DEMO_OUT)
	@sed -e 's|@OUT@|$(abspath $(DEMO_OUT))|' configs/demo.toml > $(DEMO_OUT)/demo.toml
	$(MPIRUN) -n $(NPROC) $(MPIRUN_FLAGS) target/release/lamella run $(DEMO_OUT)/demo.toml
	@echo
	@echo "lamella demo finished: results in $(abspath $(DEMO_OUT))"
	@echo "  container  $(abspath $(DEMO_OUT))/lamella.h5"
	@echo "  tomograms  $(abspath $(DEMO_OUT))/tomograms/"
	@echo "  summary    $(abspath $(DEMO_OUT))/summary.json"
	@echo "  report     $(abspath $(DEMO_OUT))/report/index.html"

# Unit tests, integration tests (CLI end-to-end, mpirun with 1 and 3 ranks, HDF5/MRC/STAR
# read back by h5py, mrcfile and starfile). LAMELLA_REQUIRE_* make missing tools a failure.
test: deps venv
	$(CARGO) test --doc
	$(CARGO) build --examples
	$(CARGO) test --benches --no-run
	@mkdir -p target
	set -o pipefail; LAMELLA_PYTHON=$(PY) LAMELLA_REQUIRE_PYTHON=1 LAMELLA_REQUIRE_MPI=1 LAMELLA_REQUIRE_BROWSER=1 \
	  $(CARGO) test --lib --bins --tests -- --test-threads=2 2>&1 | tee target/test-output.log
	@awk '/^test result:/ {p+=$$4; f+=$$6} END {printf "lamella: %d passed, %d failed\n", p, f; exit (f>0)}' target/test-output.log

# The templates submitted to a local SLURM: single node, job array + merge, STA requeue.
test-slurm: deps venv
	LAMELLA_PYTHON=$(PY) CARGO=$(CARGO) bash scripts/test-slurm.sh

bench: deps
	$(CARGO) bench

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt

clean:
	$(CARGO) clean
	rm -rf $(DEMO_OUT)
