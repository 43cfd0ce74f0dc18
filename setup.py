"""Anomaly and fraud detection on Spark: feature jobs, RCF and logistic detectors, batch and streaming scoring."""
from setuptools import find_packages, setup

# The project's packages, by layer (ARCHITECTURE.md "Target layout"; scripts/check_imports.py).
PACKAGES = ["runtime", "ingest", "synthetic", "features", "models", "scoring", "streaming", "sagemaker_backend",
            "serving", "reporting", "jobs"]

setup(
    name="zen-anomaly",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.11",
    packages=find_packages(include=[f"{p}{s}" for p in PACKAGES for s in ("", ".*")]),
    package_data={"runtime": ["defaults.yaml", "log4j2.properties"], "serving": ["demo.html"]},
    install_requires=[
        # Spark 3.5 / Scala 2.12: what EMR 7.x runs and what sagemaker-pyspark 1.4.5 loads (not Spark 4).
        "pyspark>=3.5.0,<3.6",
        "pandas>=2.2,<3.2",
        "pyarrow>=15,<27",
        "numpy>=1.26,<2.5",
        "pyyaml>=6,<7",
        "boto3>=1.34,<2",
        # The v2 SDK: image_uris.retrieve for the RCF image and RecordIO-protobuf helpers.
        "sagemaker>=2.200,<3",
        "matplotlib>=3.8,<4",
        # Compiles the Random Cut Forest scoring kernels (IsolationForest speed, not pure Python).
        "numba>=0.60",
        # The stream's driver-side decoding of clean JSON records (ingest/fastdecode.py).
        "orjson>=3.8,<4",
        # Delta Lake 3.3 is the one built for Spark 3.5; 3.3.2 is the release EMR 7.12 ships.
        "delta-spark==3.3.2",
        # delta-rs: commits files written outside Spark's writer (the score job's Python workers, the
        # stream's driver-side batches) to a local Delta table in one transaction.
        "deltalake>=1.0,<2",
        # The scoring API (python -m jobs serve): an ASGI app on Starlette, served by uvicorn (README, Scoring API).
        "starlette>=0.37,<2",
        "uvicorn>=0.29,<1",
        # uvicorn's C HTTP parser and event loop (what uvicorn[standard] adds; used when installed):
        # less CPU per request than its pure-Python h11 and asyncio loop.
        "httptools>=0.6,<1",
        "uvloop>=0.19,<1; sys_platform != 'win32'",
    ],
    extras_require={
        # sagemaker_pyspark==1.4.5 pins pyspark==3.3.0, so the Makefile installs it with --no-deps.
        "test": ["pytest>=8,<10", "pytest-timeout>=2.3", "moto[server]>=5.0,<6", "scikit-learn>=1.4,<2",
                 # the demo-page test drives headless Chromium through the DevTools protocol
                 "websocket-client>=1.7,<2"],
        "bench": ["duckdb>=1.0,<3", "scikit-learn>=1.4,<2", "rrcf>=0.4,<0.5", "psutil>=5.9"],
        "lint": ["ruff>=0.5"],
    },
)
