# The two commands a new user needs:  `make demo`  and  `make test`.
# Both create .venv when it is missing and install the project into it.
VENV ?= .venv
PY := $(VENV)/bin/python
# On the project's machines torch is installed from a local copy with exactly this spec;
# elsewhere override it, e.g. `make test TORCH_SPEC="torch torchvision"` (any torch >= 2.4).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DEMO_DIR ?= work_dirs/demo
DEMO_CONFIG ?= configs/quickstart/co_dino_r18_k2_quickstart_synthetic.py

.PHONY: test demo lint install wheel clean

install: $(VENV)/.installed

# setuptools<81 is pinned here, not in requirements.txt: it keeps pkg_resources, which
# mmengine 0.10 imports for `pkg::` configs, read_base() and mmengine.hub (codetr uses none).
$(VENV)/.installed: setup.py requirements.txt requirements/tests.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip "setuptools<81" wheel
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q --no-build-isolation -e ".[tests]"
	touch $@

lint: install
	$(PY) -m ruff check codetr tools tests configs benchmarks projects demo

test: install
	$(PY) -m pytest

# The main job (README, "make demo"): synthetic shapes, then train / evaluate / draw / plot a
# small Co-DINO (K = 2 aux heads) on the CPU; outputs in $(DEMO_DIR).
demo: install
	$(PY) tools/misc/make_synthetic_dataset.py --out data/synthetic --train 640 --val 64 \
		--min-size 128 --max-size 160 --seed 0
	$(PY) tools/analysis_tools/browse_dataset.py $(DEMO_CONFIG) \
		--output-dir $(DEMO_DIR)/browse --max-images 8
	@echo "Browsed ground truth written to $(DEMO_DIR)/browse"
	$(PY) tools/misc/run_demo.py --config $(DEMO_CONFIG) --work-dir $(DEMO_DIR)

# A wheel in dist/ (configs copied into it as codetr/.mim/configs); README, "Install".
wheel: install
	$(PY) -m pip wheel --no-deps --no-build-isolation -w dist .

clean:
	rm -rf work_dirs outputs .pytest_cache
