# Routine commands; `make help` lists them.
PYTHON ?= python3
CONF ?= conf/local.yaml
JOBS = $(PYTHON) -m jobs
STAMP = .make/installed

.DEFAULT_GOAL := help
.PHONY: help install run test test-unit test-integration lint bench package clean report-check maintain cluster cluster-stop kinesis-local

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): setup.py
	@mkdir -p .make
	$(PYTHON) -m pip install -q -e '.[test,bench,lint]'
	# sagemaker_pyspark 1.4.5 pins pyspark==3.3.0; it runs on Spark 3.5, so skip its dependency pins.
	$(PYTHON) -m pip install -q --no-deps 'sagemaker_pyspark==1.4.5'
	# the Delta jars, from Maven Central into the Ivy cache (~/.ivy2): later sessions start offline
	$(PYTHON) -m runtime.spark
	@test -f /usr/share/java/protobuf.jar || echo "note: /usr/share/java/protobuf.jar missing: apt-get install libprotobuf-java (needed by the SageMaker backend)"
	@touch $(STAMP)

install: $(STAMP) ## install the project and its test/bench dependencies (pip)

run: $(STAMP) ## run the whole pipeline on the embedded default (local Spark, files under ./lake), with timings
	PYTHON=$(PYTHON) CONF=$(CONF) bash scripts/run_pipeline.sh

test: $(STAMP) ## run unit and integration tests
	$(PYTHON) -m pytest

test-unit: $(STAMP) ## run the unit tests only
	$(PYTHON) -m pytest tests/unit

test-integration: $(STAMP) ## run the integration tests only
	$(PYTHON) -m pytest tests/integration

lint: $(STAMP) ## check style with ruff, and the import graph (no cycles, layers as ARCHITECTURE.md says)
	$(PYTHON) -m ruff check .
	$(PYTHON) scripts/check_imports.py

maintain: $(STAMP) ## OPTIMIZE and VACUUM the lake's Delta tables (both data sets), keeping the registry's training snapshots
	$(JOBS) maintain --conf $(CONF) --dataset telemetry
	$(JOBS) maintain --conf $(CONF) --dataset transactions

BENCH_ROWS ?= 10000000

bench: $(STAMP) ## benchmarks (numbers, not pass/fail; JSON in bench/results/): features vs DuckDB, RCF vs peers, Handbook protocol, scoring, streaming
	$(PYTHON) bench/bench_features.py --rows $(BENCH_ROWS)
	$(PYTHON) bench/bench_scoring.py --rows $(BENCH_ROWS)
	$(PYTHON) bench/bench_rcf.py
	$(PYTHON) bench/bench_handbook.py
	$(PYTHON) bench/bench_stream.py

package: $(STAMP) ## build what spark-submit needs: dist/*.whl for --py-files and the conf files
	rm -rf dist && $(PYTHON) -m pip wheel -q --no-deps -w dist .
	cp -r conf dist/conf
	@ls dist

.PHONY: deploy-files
deploy-files: ## write conf/emr.yaml, deploy/steps/*.json and deploy/iam/*.json from deploy/names.yaml (the one place for AWS names)
	$(PYTHON) deploy/render.py

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
