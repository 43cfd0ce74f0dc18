"""Lets ``spark-submit jobs/<file>.py`` import the project when it is not installed."""
import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
