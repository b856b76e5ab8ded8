# Two commands set up everything on a fresh machine (Python 3.11 + Java 17):
#   make demo   the whole pipeline on the built-in sample dataset, local Spark
#   make test   the test suite
# The virtual environment is created and filled from requirements/constraints.txt
# the first time; afterwards the install step is a no-op until the pins change.

PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_DIR ?= demo-output
DEMO_IMAGES ?= 3000

export SPARK_LOCAL_IP ?= 127.0.0.1
export PYSPARK_PYTHON := $(abspath $(PY))
export PYSPARK_DRIVER_PYTHON := $(abspath $(PY))
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test unit venv check-java clean

$(STAMP): requirements/constraints.txt setup.py
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found: install Python 3.11 (e.g. apt-get install python3.11 python3.11-venv)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip "setuptools<70" wheel
	$(PY) -m pip install --quiet -c requirements/constraints.txt -e ".[spark,tf,metrics,test]"
	$(PY) -m pip check
	touch $(STAMP)

venv: $(STAMP)

check-java:
	@command -v java >/dev/null 2>&1 || { echo "error: Java not found: Spark needs Java 17 (e.g. apt-get install openjdk-17-jre-headless)"; exit 1; }

demo: check-java $(STAMP)
	$(PY) -m captioning.pipeline.demo --workdir $(DEMO_DIR) --images $(DEMO_IMAGES)

test: check-java $(STAMP)
	$(PY) -m pytest -q tests

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

clean:
	rm -rf $(VENV) build dist lib/*.egg-info .pytest_cache

# --- AWS (emr/README.md) ---
DIST ?= dist/emr
VALIDATOR := emr/validator/node_modules/.package-lock.json

.PHONY: package statemachines asl-validator deploy

package: $(STAMP)
	$(PY) -m captioning.aws.package --dist $(DIST)

statemachines: $(STAMP)
	$(PY) -m captioning.aws.statemachines

asl-validator: $(VALIDATOR)
$(VALIDATOR): emr/validator/package.json emr/validator/package-lock.json
	@command -v npm >/dev/null || { echo "error: npm not found: install Node.js 18+ (e.g. apt-get install nodejs npm)"; exit 1; }
	npm ci --prefix emr/validator --no-audit --no-fund

# make deploy VERSION=20261201-a STACK=captioning   (or ARTIFACTS_URI=s3://bucket/artifacts)
deploy: package
	@test -n "$(VERSION)" || { echo "error: give VERSION=<name of this deployment>"; exit 1; }
	$(PY) -m captioning.aws.deploy --version $(VERSION) --dist $(DIST) $(if $(STACK),--stack $(STACK),--artifacts-uri $(ARTIFACTS_URI))
