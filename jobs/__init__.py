"""Thin entry points, one per job: ``python -m jobs <job> --conf FILE`` or ``spark-submit jobs/<file>.py``."""
