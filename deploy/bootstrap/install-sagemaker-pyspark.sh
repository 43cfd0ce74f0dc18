#!/bin/bash
# EMR bootstrap action (runs on every node before the applications start).
#
#   Path=s3://your-artifact-bucket/fraud-anomaly/bootstrap/install-sagemaker-pyspark.sh,
#   Args=[s3://your-artifact-bucket/fraud-anomaly]      (the prefix `make package` output went to)
#
# Bootstrap actions run before EMR installs Spark: nothing here may import pyspark, nor a package
# that imports it (sagemaker_pyspark does), or the action fails on every node and so does the cluster.
#
# 1. Python 3.11 (EMR 7.1 or later: Amazon Linux 2023, whose python3 is 3.9, has python3.11 in dnf).
# 2. The project's Python dependencies, but not pyspark: EMR's Spark provides it. sagemaker_pyspark
#    1.4.5 pins pyspark==3.3.0, so it goes in with --no-deps. The project wheel itself goes into a
#    private folder, /usr/lib/fraud-anomaly/lib, not site-packages: its top-level packages have
#    plain names (jobs, runtime, models, features, ...) that must not shadow another application's
#    on a shared node; only our spark-submit puts that folder on PYTHONPATH (driver and executors).
# 3. A stable folder with only the jars EMR lacks: sagemaker-spark and the SageMaker / SageMaker
#    Runtime 1.12 SDK jars, found in the list of files pip installed (importlib.metadata reads the
#    package's RECORD; it does not import the package). The wheel's hadoop-aws-3.3.1 and aws-java-sdk-bundle-1.11.901 are left
#    out: EMR ships newer ones (and protobuf-java) on its Hadoop classpath.
# 4. /usr/lib/fraud-anomaly/bin/fraud-submit, the spark-submit wrapper the EMR steps call.
# No Delta jar is installed here: the tables are Delta (conf/emr.yaml storage.format) and EMR ships
# Delta itself; create the cluster with deploy/emr-configurations.json (the delta-defaults
# classification, delta.enabled=true), which puts EMR's Delta jars on the extraClassPath that
# fraud-submit keeps (it prepends our jars to EMR's value). conf/emr.yaml leaves
# spark.delta_package empty, so no job asks Ivy for another Delta on the cluster.
#
# Overrides, for tests/integration/test_bootstrap.py (a fresh virtualenv instead of the node):
#   FRAUD_PYTHON       the Python to install into (default /usr/bin/python3.11)
#   FRAUD_HOME_DIR     where lib/, jars/ and bin/ go (default /usr/lib/fraud-anomaly; the wrapper
#                      always refers to the default)
#   FRAUD_PYTHON_DEPS  the dependency list, space-separated pip requirements (default below)
set -euo pipefail
ARTIFACTS="${1:?usage: install-sagemaker-pyspark.sh s3://BUCKET/PREFIX (where dist/ was uploaded)}"
HOME_DIR="${FRAUD_HOME_DIR:-/usr/lib/fraud-anomaly}"
PY="${FRAUD_PYTHON:-/usr/bin/python3.11}"
DEFAULT_DEPS="boto3>=1.34,<2 sagemaker>=2.200,<3 pyyaml>=6,<7 pandas>=2.2,<3.2 pyarrow>=15,<27 numpy>=1.26,<2.5 numba>=0.60 matplotlib>=3.8,<4"
read -r -a DEPS <<<"${FRAUD_PYTHON_DEPS-$DEFAULT_DEPS}"

sudo dnf install -y -q python3.11 python3.11-pip
WHEELS=$(mktemp -d)
aws s3 cp --recursive --quiet --exclude '*' --include '*.whl' "$ARTIFACTS/dist/" "$WHEELS/"
if [ "${#DEPS[@]}" -gt 0 ]; then
    sudo "$PY" -m pip install --quiet "${DEPS[@]}"
fi
sudo "$PY" -m pip install --quiet --no-deps 'sagemaker_pyspark==1.4.5'
sudo "$PY" -m pip install --quiet --no-deps --upgrade --target "$HOME_DIR/lib" "$WHEELS"/*.whl

# The jar folder from the installed files' list: `import sagemaker_pyspark` would import pyspark,
# which EMR has not installed yet.
JAR_DIR=$("$PY" - <<'FIND_JARS'
import importlib.metadata
import sys

dist = importlib.metadata.distribution("sagemaker_pyspark")
folders = sorted({str(dist.locate_file(f).parent) for f in dist.files or ()
                  if f.parts[:2] == ("sagemaker_pyspark", "jars") and f.suffix == ".jar"})
if len(folders) != 1:
    sys.exit(f"sagemaker_pyspark {dist.version}: expected one jars folder among its files, found {folders}")
print(folders[0])
FIND_JARS
)
sudo mkdir -p "$HOME_DIR/jars" "$HOME_DIR/bin"
sudo cp "$JAR_DIR"/sagemaker-spark_*.jar "$JAR_DIR"/aws-java-sdk-sagemaker-*.jar \
        "$JAR_DIR"/aws-java-sdk-sagemakerruntime-*.jar "$HOME_DIR/jars/"

sudo tee "$HOME_DIR/bin/fraud-submit" >/dev/null <<'WRAPPER'
#!/bin/bash
# fraud-submit JOB CONF_URI [job options ...]
#   JOB: build_features | train | score | stream | summary | evaluate (a file of the jobs package)
#   CONF_URI: the config (e.g. s3://.../conf/emr.yaml); shipped with --files, read as --conf <name>
# Runs spark-submit in cluster mode with Python 3.11 and the SageMaker jars *prepended* to EMR's
# own extraClassPath (replacing it would drop EMRFS and the AWS SDK). FRAUD_SUBMIT_OPTS adds
# spark-submit options (e.g. "--conf spark.executor.memory=8g").
set -euo pipefail
JOB="${1:?usage: fraud-submit JOB CONF_URI [job options]}"; CONF_URI="${2:?usage: fraud-submit JOB CONF_URI [job options]}"
shift 2
PY=/usr/bin/python3.11
JARS='/usr/lib/fraud-anomaly/jars/*'
DEFAULTS=/etc/spark/conf/spark-defaults.conf
emr_value() { awk -v key="$1" '$1 == key {print $2}' "$DEFAULTS"; }
LIB=/usr/lib/fraud-anomaly/lib  # the project's packages, visible to this application only
JOBS_DIR="$LIB/jobs"
# shellcheck disable=SC2086  # FRAUD_SUBMIT_OPTS is a list of options
exec spark-submit --deploy-mode cluster \
  --conf spark.yarn.appMasterEnv.PYSPARK_PYTHON="$PY" \
  --conf spark.executorEnv.PYSPARK_PYTHON="$PY" \
  --conf spark.yarn.appMasterEnv.PYTHONPATH="$LIB" \
  --conf spark.executorEnv.PYTHONPATH="$LIB" \
  --conf "spark.driver.extraClassPath=$JARS:$(emr_value spark.driver.extraClassPath)" \
  --conf "spark.executor.extraClassPath=$JARS:$(emr_value spark.executor.extraClassPath)" \
  --py-files "$JOBS_DIR/_bootstrap.py" \
  --files "$CONF_URI" \
  ${FRAUD_SUBMIT_OPTS:-} \
  "$JOBS_DIR/$JOB.py" --conf "$(basename "$CONF_URI")" "$@"
WRAPPER
sudo chmod 755 "$HOME_DIR/bin/fraud-submit"
