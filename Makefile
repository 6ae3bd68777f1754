# Two entry points for a fresh machine: `make demo` and `make test`. Both create the venv.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
HASHGRID := $(VENV)/.hashgrid-built
OUT    ?= demo

.PHONY: setup demo test clean
setup: $(STAMP) $(HASHGRID)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	-bash scripts/install-llvm.sh
	touch $(STAMP)

# the fused CPU hash-grid kernel (C++, about a minute); without it backend="auto" uses the PyTorch reference
$(HASHGRID): $(STAMP) physinv/core/csrc/hashgrid_cpu.cpp
	-$(PY) -m physinv.core.hashgrid_cpu build && touch $(HASHGRID)

demo: setup
	$(VENV)/bin/physinv demo --out $(OUT)

test: setup
	$(PY) -m pytest -q -n 2 --durations=15 tests

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
