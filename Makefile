# Two commands set up everything on a fresh machine (Python 3.11 + Java 17):
#   make demo   the whole pipeline on the built-in sample dataset, local Spark
#   make test   the test suite
# The virtual environment is created and filled from requirements/constraints.txt
# the first time; afterwards the install step is a no-op until the pins change.

PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
JARS   := $(VENV)/spark-jars/.installed
STORAGE ?= local
DEMO_DIR ?= demo-output$(if $(filter s3,$(STORAGE)),-s3)
DEMO_IMAGES ?= 3000

export SPARK_LOCAL_IP ?= 127.0.0.1
export PYSPARK_PYTHON := $(abspath $(PY))
export PYSPARK_DRIVER_PYTHON := $(abspath $(PY))
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test unit venv check-java clean app

$(STAMP): requirements/constraints.txt setup.py
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found: install Python 3.11 (e.g. apt-get install python3.11 python3.11-venv)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip "setuptools<70" wheel
	$(PY) -m pip install --quiet -c requirements/constraints.txt -e ".[spark,tf,metrics,app,test]"
	$(PY) -m pip check
	touch $(STAMP)

# Hadoop's S3A connector for local Spark (requirements/spark-s3a.pom.xml), from Maven Central, once.
$(JARS): requirements/spark-s3a.pom.xml $(STAMP)
	@command -v mvn >/dev/null || { echo "error: mvn not found: Maven fetches Spark's S3 connector (e.g. apt-get install maven)"; exit 1; }
	@$(PY) -c "import pyspark, glob, sys; sys.exit(0 if glob.glob(pyspark.__path__[0] + '/jars/hadoop-client-api-3.3.4.jar') else 'error: pyspark does not carry the Hadoop 3.3.4 client the S3A connector in requirements/spark-s3a.pom.xml was chosen for')"
	rm -rf $(VENV)/spark-jars
	mvn -q -B -Dstyle.color=never -f requirements/spark-s3a.pom.xml org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies \
		-DincludeArtifactIds=hadoop-aws,aws-java-sdk-bundle -DoutputDirectory=$(abspath $(VENV))/spark-jars
	touch $(JARS)

venv: $(STAMP) $(JARS)

check-java:
	@command -v java >/dev/null 2>&1 || { echo "error: Java not found: Spark needs Java 17 (e.g. apt-get install openjdk-17-jre-headless)"; exit 1; }

demo: check-java $(STAMP) $(JARS)
	$(PY) -m captioning.pipeline.demo --workdir $(DEMO_DIR) --images $(DEMO_IMAGES) --storage $(STORAGE)

# Two workers (tests/conftest.py groups the tests): most tests wait on JVMs, subprocesses and servers.
TEST_WORKERS ?= 2
test: check-java $(STAMP) $(JARS)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder tests

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

# The web page on 127.0.0.1 (README: "Try a model on your own photos"), by default with the
# model and the bulk captions of `make demo`:  make app MODEL=... RESULTS=... PORT=...
MODEL ?= $(DEMO_DIR)/model
RESULTS ?= $(DEMO_DIR)/captions
PORT ?= 8501
app: $(STAMP)
	$(PY) -m captioning.cli serve --model $(MODEL) $(if $(wildcard $(RESULTS)),--results $(RESULTS)) --port $(PORT)

clean:
	rm -rf $(VENV) build dist lib/*.egg-info .pytest_cache

# --- AWS (emr/README.md) ---
DIST ?= dist/emr
WHEELHOUSE ?= dist/wheelhouse
NODE_SETS ?= cpu,gpu
VALIDATOR := emr/validator/node_modules/.package-lock.json
INTERPRETER := emr/rehearsal/node_modules/.package-lock.json

.PHONY: package statemachines asl-validator rehearsal-interpreter rehearse deploy

# the node wheel sets (NODE_SETS=cpu for the CPU set alone) go to the shared $(WHEELHOUSE)
package: $(STAMP)
	$(PY) -m captioning.aws.package --dist $(DIST) --wheelhouse $(WHEELHOUSE) --node-sets $(NODE_SETS)

statemachines: $(STAMP)
	$(PY) -m captioning.aws.statemachines

asl-validator: $(VALIDATOR)
$(VALIDATOR): emr/validator/package.json emr/validator/package-lock.json
	@command -v npm >/dev/null || { echo "error: npm not found: install Node.js 18+ (e.g. apt-get install nodejs npm)"; exit 1; }
	npm ci --prefix emr/validator --no-audit --no-fund

# the Step Functions interpreter (npm aws-local-stepfunctions) and the Node.js 22 it needs, pinned in emr/rehearsal/
rehearsal-interpreter: $(INTERPRETER)
$(INTERPRETER): emr/rehearsal/package.json emr/rehearsal/package-lock.json
	@command -v npm >/dev/null || { echo "error: npm not found: install Node.js 18+ (e.g. apt-get install nodejs npm)"; exit 1; }
	npm ci --prefix emr/rehearsal --no-audit --no-fund

# both state machines run by the interpreter on local Spark and a local S3 server (emr/README.md)
REHEARSAL_DIR ?= rehearsal-output
rehearse: check-java $(STAMP) $(JARS) $(INTERPRETER)
	$(PY) -m captioning.aws.rehearsal --workdir $(REHEARSAL_DIR)

# make deploy VERSION=20261201-a STACK=captioning   (or ARTIFACTS_URI=s3://bucket/artifacts)
deploy: package
	@test -n "$(VERSION)" || { echo "error: give VERSION=<name of this deployment>"; exit 1; }
	$(PY) -m captioning.aws.deploy --version $(VERSION) --dist $(DIST) --wheelhouse $(WHEELHOUSE) $(if $(STACK),--stack $(STACK),--artifacts-uri $(ARTIFACTS_URI))
