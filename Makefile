# Routine commands; `make help` lists them.
PYTHON ?= python3
CONF ?= conf/local.yaml
JOBS = $(PYTHON) -m jobs
STAMP = .make/installed

.DEFAULT_GOAL := help
.PHONY: help install run test test-unit test-integration lint bench package clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): setup.py
	@mkdir -p .make
	$(PYTHON) -m pip install -q -e '.[test,bench,lint]'
	# sagemaker_pyspark 1.4.5 pins pyspark==3.3.0; it runs on Spark 3.5, so skip its dependency pins.
	$(PYTHON) -m pip install -q --no-deps 'sagemaker_pyspark==1.4.5'
	@test -f /usr/share/java/protobuf.jar || echo "note: /usr/share/java/protobuf.jar missing: apt-get install libprotobuf-java (needed by the SageMaker backend)"
	@touch $(STAMP)

install: $(STAMP) ## install the project and its test/bench dependencies (pip)

run: $(STAMP) ## run the whole pipeline on the embedded default (local Spark, files under ./lake)
	$(PYTHON) -m jobs generate --conf $(CONF) --dataset telemetry
	$(PYTHON) -m jobs features --conf $(CONF) --dataset telemetry
	$(PYTHON) -m jobs generate --conf $(CONF) --dataset transactions --set generate.transactions.days=60
	$(PYTHON) -m jobs features --conf $(CONF) --dataset transactions

test: $(STAMP) ## run unit and integration tests
	$(PYTHON) -m pytest

test-unit: $(STAMP) ## run the unit tests only
	$(PYTHON) -m pytest tests/unit

test-integration: $(STAMP) ## run the integration tests only
	$(PYTHON) -m pytest tests/integration

lint: $(STAMP) ## check style with ruff
	$(PYTHON) -m ruff check .

bench: $(STAMP) ## benchmarks (numbers, not pass/fail): 10M-row generate/features vs DuckDB, detectors vs peers
	$(PYTHON) bench/bench_features.py --rows 10000000

package: $(STAMP) ## build what spark-submit needs: dist/*.whl for --py-files and the conf files
	rm -rf dist && $(PYTHON) -m pip wheel -q --no-deps -w dist .
	cp -r conf dist/conf
	@ls dist

clean: ## remove generated data and build output
	rm -rf lake dist build *.egg-info .make spark-warehouse metastore_db
