"""The model registry for a person, behind `python -m jobs models`: a listing and manual promotion."""
from __future__ import annotations

from typing import Any, Sequence

from models import registry
from models.snapshots import snap_text
from runtime import fs
from runtime.errors import InputError
from runtime.progress import RunSummary, log


def open_registry(config, models_path: str) -> str:
    """The registry root of ``config``'s data set under ``models_path``; a Hadoop file system
    (``s3a://``) gets its Spark session first (runtime/fs reaches it through the active session).
    """
    from scoring.champions import registry_root

    root = registry_root(models_path, config.dataset)
    if fs.local_path(root) is None:
        from runtime.spark import build_session

        build_session(config)
    return root


def _fmt(value, spec=".3f") -> str:
    return "-" if value is None or value != value else format(value, spec)


def listing_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """A table of versions: champion mark, decision, threshold and its validation numbers, test AP,
    then the rule, the table versions it was trained on, the reasons and the warnings of each
    version on lines of their own.
    """
    lines = [f"{'kind':<9} {'version':<7} {'champion':<9} {'decision':<10} {'threshold':>10} {'val.prec':>8} "
             f"{'val.rec':>7} {'alerts/d':>9} {'test AP':>7}  created / reasons"]
    for row in rows:
        mark = ("yes" + (" (manual)" if row["promoted_by"] == "manual" else "")) if row["champion"] else ""
        lines.append(f"{row['kind']:<9} {row['version']:<7} {mark:<9} {row['decision'] or '?':<10} "
                     f"{_fmt(row['threshold'], '.4f'):>10} {_fmt(row['validation_precision']):>8} "
                     f"{_fmt(row['validation_recall']):>7} {_fmt(row['alerts_per_day'], ',.1f'):>9} "
                     f"{_fmt(row['test_average_precision']):>7}  {row['created']}")
        notes = [f"rule: {row['rule']}" + (f" (not met: fell back to {row['fallback']})" if row["fallback"] else "")
                 ] if row["rule"] else []
        snaps = row.get("snapshots") or {}
        if snaps.get("features"):
            notes.append("trained on " + ", ".join(f"{name} {snap_text(snaps[name])}" for name in ("features", "labels")
                                                   if snaps.get(name)))
        lines += [f"{'':<17} {line}" for line in notes + row["reasons"] + [f"warning: {w}" for w in row["warnings"]]]
    return lines


def list_versions(root: str, kind: str | None = None, *, show: bool = True) -> tuple[RunSummary, list[dict]]:
    """(summary, one row per version) of the registry ``root``; ``show`` prints the table."""
    rows = registry.listing(root, [kind] if kind else None)
    if show:
        for line in listing_lines(rows) if rows else [f"no model versions under {root}"]:
            print(line, flush=True)
    champions = ",".join(f"{row['kind']}={row['version']}" for row in rows if row["champion"])
    # not ``versions``: with --json that key is the listing itself (the rows)
    return RunSummary("models", rows_out=len(rows), extra={"champions": champions or "none"}), rows


def promote_version(root: str, kind: str | None, version: str, *, user: str, reason: str = "") -> RunSummary:
    """Make ``version`` of ``kind`` the champion by hand (recorded in the pointer)."""
    if kind not in ("rcf", "logistic", "som"):
        raise InputError("--promote needs --model rcf, --model logistic or --model som")
    try:
        pointer = registry.promote(root, kind, version, by="manual", user=user, reason=reason)
    except registry.RegistryError as exc:
        known = [v["version"] for v in registry.versions(root, kind)]
        raise InputError(f"{exc} (versions: {', '.join(known) or 'none'})") from None
    log("models", f"{kind} champion is now {pointer['version']} (was {pointer['previous']}), "
                  f"promoted by {pointer['user']}" + (f": {reason}" if reason else ""))
    return RunSummary("models", versions={kind: pointer["version"]}, extra={"previous": pointer["previous"]})
