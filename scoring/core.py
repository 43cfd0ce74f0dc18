"""The names callers imported from ``scoring.core`` before scoring/ was split, re-exported.

New code imports from where each lives: scoring/plan.py (the numpy core), scoring/champions.py,
scoring/spark.py (Spark frames), scoring/files.py (Parquet files), scoring/local.py (pandas
frames), scoring/scorer.py (``Scorer``, ``champion_scorer``).
"""
from scoring.champions import Champions, load_champions, registry_root
from scoring.files import arrow_codec, score_parquet_files, write_scored_files
from scoring.local import score_pandas
from scoring.plan import SCORE_COLUMNS, ScoringError, ScoringPlan, score_arrays
from scoring.scorer import Scorer, champion_scorer
from scoring.spark import assemble, score_events

__all__ = ["SCORE_COLUMNS", "Champions", "Scorer", "ScoringError", "ScoringPlan", "arrow_codec", "assemble",
           "champion_scorer", "load_champions", "registry_root", "score_arrays", "score_events", "score_pandas",
           "score_parquet_files", "write_scored_files"]
