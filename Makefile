# Routine commands; `make help` lists them.
# Everything runs in the project virtualenv .venv, made from the machine's python3.11 by `make install`
# (any target installs first when needed); `make PYTHON=/path/to/python ...` uses another interpreter.
VENV ?= .venv
BASE_PYTHON ?= python3.11
PYTHON ?= $(VENV)/bin/python
CONF ?= conf/local.yaml
JOBS = $(PYTHON) -m jobs
STAMP = .make/installed
IAC_STAMP = .make/iac-installed

.DEFAULT_GOAL := help
.PHONY: help install run test test-unit test-integration test-cluster lint bench package clean report-check maintain chromium cluster cluster-stop kinesis-local serve lambda-package

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-18s %s\n", $$1, $$2}'

# The virtualenv, only when PYTHON is its interpreter; a new one (pyvenv.cfg newer than the stamp)
# means a reinstall.
ifeq ($(PYTHON),$(VENV)/bin/python)
VENV_CFG = $(VENV)/pyvenv.cfg
$(VENV_CFG):
	$(BASE_PYTHON) -m venv $(VENV) || { rm -rf $(VENV); echo "cannot make $(VENV) with $(BASE_PYTHON) -m venv (Debian: apt-get install python3.11-venv; or make BASE_PYTHON=/path/to/python3.11)"; exit 1; }
	$(PYTHON) -m pip install -q --upgrade pip
endif

$(STAMP): setup.py $(VENV_CFG)
	@mkdir -p .make
	$(PYTHON) -m pip install -q -e '.[test,bench,lint]'
	# sagemaker_pyspark 1.4.5 pins pyspark==3.3.0; it runs on Spark 3.5, so skip its dependency pins.
	$(PYTHON) -m pip install -q --no-deps 'sagemaker_pyspark==1.4.5'
	# Delta's jars and protobuf-java (the SageMaker backend's RecordIO writer), from Maven Central
	# into the Ivy cache (~/.ivy2): later sessions, tests and `make run` start offline
	$(PYTHON) -m runtime.spark
	@$(MAKE) --no-print-directory chromium
	@$(MAKE) --no-print-directory iac-install PYTHON=$(PYTHON)
	@touch $(STAMP)

# Headless Chromium renders the HTML reports in the report tests and `make report-check`: Debian's
# package, installed through apt-get when we are root or have sudo.
chromium:
	@if command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null; then :; \
	elif ! command -v apt-get >/dev/null; then \
	  echo "note: no chromium on PATH and no apt-get: install Chromium for the report-render tests (they skip without it)"; \
	elif [ "$$(id -u)" = 0 ]; then \
	  DEBIAN_FRONTEND=noninteractive apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; \
	elif sudo -n true 2>/dev/null; then \
	  sudo -n apt-get update -q && sudo -n DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; \
	else \
	  echo "note: no chromium on PATH: run 'sudo apt-get install -y chromium' for the report-render tests (they skip without it)"; \
	fi

install: $(STAMP) ## make .venv and install the project, its test/bench/lint dependencies, its jars (Maven) and Chromium (apt)

run: $(STAMP) ## run the whole pipeline on the embedded default (local Spark, files under ./lake), with timings
	PYTHON=$(PYTHON) CONF=$(CONF) bash scripts/run_pipeline.sh

test: $(STAMP) $(IAC_STAMP) ## run unit and integration tests (all but the cluster test)
	$(PYTHON) -m pytest

test-cluster: $(STAMP) ## the pipeline as spark-submit applications on a standalone cluster (2 workers) over s3a on moto
	$(PYTHON) -m pytest -m cluster tests/integration/test_cluster.py

test-unit: $(STAMP) ## run the unit tests only
	$(PYTHON) -m pytest tests/unit

test-integration: $(STAMP) $(IAC_STAMP) ## run the integration tests only
	$(PYTHON) -m pytest tests/integration

lint: $(STAMP) ## check style with ruff, and the import graph (no cycles, layers as ARCHITECTURE.md says)
	$(PYTHON) -m ruff check .
	$(PYTHON) scripts/check_imports.py

maintain: $(STAMP) ## OPTIMIZE and VACUUM the lake's Delta tables (both data sets), keeping the registry's training snapshots
	$(JOBS) maintain --conf $(CONF) --dataset telemetry
	$(JOBS) maintain --conf $(CONF) --dataset transactions

BENCH_ROWS ?= 10000000

bench: $(STAMP) ## benchmarks (numbers, not pass/fail; JSON in bench/results/): features vs DuckDB, RCF vs peers, Handbook protocol, scoring, streaming, scoring API
	$(PYTHON) bench/bench_features.py --rows $(BENCH_ROWS)
	$(PYTHON) bench/bench_scoring.py --rows $(BENCH_ROWS)
	$(PYTHON) bench/bench_rcf.py
	$(PYTHON) bench/bench_handbook.py
	$(PYTHON) bench/bench_stream.py
	$(PYTHON) bench/bench_serve.py --lake-conf $(CONF)

package: $(STAMP) ## build what spark-submit needs: dist/*.whl for --py-files and the conf files
	rm -rf dist && $(PYTHON) -m pip wheel -q --no-deps -w dist .
	cp -r conf dist/conf
	@ls dist

# The AWS stack (deploy/cdk): the CDK CLI from npm into .make/cdk, the CDK library and cfn-lint
# from PyPI (deploy/cdk/requirements.txt); `make install` fetches both, then synth runs offline.
CDK_CLI_VERSION ?= 2.1149.0
CDK_DIR = .make/cdk
CDK = $(CDK_DIR)/node_modules/.bin/cdk
IAC_OUT ?= build/cdk.out
STACK ?= fraud-anomaly
STACK_CONF ?= build/conf/emr.yaml
export CDK_DISABLE_VERSION_CHECK = 1
export CDK_DISABLE_CLI_TELEMETRY = true
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION = 1
export JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION = 1
# Debian's Node.js 20 works with jsii but is past its support date: jsii says so in a banner on every run
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION = 20

$(IAC_STAMP): deploy/cdk/requirements.txt $(VENV_CFG)
	@mkdir -p $(CDK_DIR)
	@command -v npm >/dev/null || { echo "npm is missing: install Node.js 20+ (Debian: apt-get install nodejs npm)"; exit 1; }
	$(PYTHON) -m pip install -q -r deploy/cdk/requirements.txt
	npm install --silent --no-audit --no-fund --prefix $(CDK_DIR) aws-cdk@$(CDK_CLI_VERSION)
	@touch $(IAC_STAMP)

.PHONY: iac iac-install stack-conf
iac-install: $(IAC_STAMP) ## install the CDK CLI (npm, into .make/cdk), aws-cdk-lib, constructs and cfn-lint (PyPI)

iac: $(IAC_STAMP) ## synthesise the AWS stack (deploy/cdk) into build/cdk.out and lint it with cfn-lint
	rm -rf $(IAC_OUT)
	$(CDK) synth --quiet --no-notices --no-version-reporting --app "$(PYTHON) deploy/cdk/app.py" \
	  -c stack=$(STACK) --output $(IAC_OUT)
	$(PYTHON) -c "import sys; from cfnlint.runner import main; sys.exit(main())" $(IAC_OUT)/$(STACK).template.json
	@echo "template: $(IAC_OUT)/$(STACK).template.json"

stack-conf: $(STAMP) ## write the job config (STACK_CONF, default build/conf/emr.yaml) and build/steps/*.json from the deployed stack STACK's outputs
	$(PYTHON) deploy/stack_config.py --stack $(STACK) --out $(STACK_CONF) --steps build/steps $(if $(REGION),--region $(REGION))

SERVE_ARGS ?=

serve: $(STAMP) ## the HTTP scoring API and demo page on the lake's transactions (serve.host/port; SERVE_ARGS="--port 0" for a free port)
	$(JOBS) serve --conf $(CONF) --dataset transactions $(SERVE_ARGS)

lambda-package: $(STAMP) ## the AWS Lambda zip of the scoring API (code, dependencies, champions + history of the lake) in build/; checks it, prints its size
	$(PYTHON) scripts/lambda_package.py --conf $(CONF) --dataset transactions --out build/lambda.zip --python $(PYTHON)

clean: ## remove generated data and build output
	rm -rf lake dist build *.egg-info .make spark-warehouse metastore_db

report-check: ## screenshot the latest summary report (headless chromium) and check it is not blank; prints the PNG
	$(PYTHON) -m reporting.daily_report check $(or $(REPORT),lake/reports)

CLUSTER_DIR ?= .make/cluster

cluster: $(STAMP) ## start a Spark standalone master and two workers on 127.0.0.1 (own JVMs); prints the master URL and how to submit
	$(PYTHON) -m runtime.cluster start $(CLUSTER_DIR)

cluster-stop: ## stop the cluster `make cluster` started (by PID) and remove its workers' folders (logs stay in .make/cluster/logs)
	$(PYTHON) -m runtime.cluster stop $(CLUSTER_DIR)

kinesis-local: $(STAMP) ## start a local Kinesis (moto on a free loopback port) with the config's stream; prints the endpoint, the --set options and how to stop it
	PYTHON=$(PYTHON) CONF=$(CONF) bash scripts/kinesis_local.sh
