#!/bin/bash
# EMR bootstrap action (runs on every node): Python deps of the SageMaker backend and a stable
# folder with sagemaker-pyspark's jars for spark.driver/executor.extraClassPath.
# sagemaker_pyspark 1.4.5 pins pyspark==3.3.0, so it must be installed with --no-deps.
set -euo pipefail
sudo python3 -m pip install --quiet 'boto3' 'sagemaker<3'
sudo python3 -m pip install --quiet --no-deps 'sagemaker_pyspark==1.4.5'
JAR_DIR=$(python3 -c 'import os, sagemaker_pyspark as s; print(os.path.join(os.path.dirname(s.__file__), "jars"))')
sudo mkdir -p /usr/lib/fraud-anomaly/jars
# Only sagemaker-spark itself and the 1.12 SDK service jars: EMR already ships hadoop-aws and a
# newer AWS SDK bundle; the wheel's hadoop-aws-3.3.1 and sdk-bundle-1.11.901 would shadow them.
sudo cp "$JAR_DIR"/sagemaker-spark_*.jar "$JAR_DIR"/aws-java-sdk-sagemaker-*.jar \
        "$JAR_DIR"/aws-java-sdk-sagemakerruntime-*.jar /usr/lib/fraud-anomaly/jars/
