"""Synthetic "Zen Network" session telemetry with labeled, injected anomalies.

Rows are built inside Spark from ``spark.range`` and seeded hash uniforms, so the same arguments
give the same rows whatever the partitioning, and 10M rows need no driver-side data. Only two
small tables are built on the driver and broadcast: one row of parameters per device, and the
injected anomaly episodes.

Row model. Time is cut into device-hours ("slots"). Each slot has ``K`` candidate sessions and
keeps each one with probability ``rate / K``, where ``rate = sessions_per_hour * activity *
profile(hour, weekday)`` (profile <= 1, so ``sessions_per_hour`` is the peak mean rate). Hence
``rows ~ devices * days * 24 * sessions_per_hour * E[activity] * E[profile]``; see
:func:`rows_for` and :func:`devices_for_rows`.

Each device has a usage profile (business: weekday office hours; residential: evenings, busier
weekends; always-on: flat), a base volume, an upload ratio, a packet size, a session duration and an
error rate. Measures are correlated: ``bytes_down`` is log-normal around the device level and
grows with the hour's activity, ``bytes_up`` follows it, ``packets`` ~ bytes / packet size,
``duration_s`` grows with bytes and ``errors`` is Poisson with a mean proportional to packets.

Injected anomalies (``label = 1``, ``anomaly_type`` names the kind), sized so that about
``anomaly_fraction`` of the rows are labeled (at least one episode of each kind is injected):

``volume_spike``
    a device's sessions in a few daytime hours carry 8-40x the usual bytes.
``unusual_hours``
    a day-time (business) device is active between 01:00 and 05:00 for a night (extra sessions).
``new_site_burst``
    a device suddenly shows up on a site it never used, with many sessions in 1-3 hours.
``slow_drift``
    a device's volume ramps up linearly over 3-5 days to 3-6x its level.
``flatline``
    a device's sensor reports the same constant values for 6-24 hours.
``collective``
    many devices homed on one site spike together in the same 1-2 hour window (their usual
    sessions are amplified and extra sessions appear).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

ANOMALY_TYPES = ("volume_spike", "unusual_hours", "new_site_burst", "slow_drift", "flatline", "collective")
PROFILES = ("business", "residential", "always_on")
PROFILE_SHARES = (0.5, 0.35, 0.15)
ACTIVITY_RANGE = (0.4, 1.0)  # per-device multiplier of the peak rate (uniform)
OUTPUT_COLUMNS = (
    "event_id",
    "device_id",
    "site_id",
    "event_time",
    "duration_s",
    "bytes_up",
    "bytes_down",
    "packets",
    "errors",
    "label",
    "anomaly_type",
)

_U53 = float(1 << 53)
_MASK53 = (1 << 53) - 1


def _profile_table() -> np.ndarray:
    """Relative activity (<= 1) indexed [profile, weekend, hour]."""
    table = np.zeros((3, 2, 24))
    hours = np.arange(24)
    business = np.where((hours >= 8) & (hours <= 17), 1.0, 0.2)
    business[[7, 18]] = 0.55
    business[(hours <= 5)] = 0.04
    table[0, 0] = business
    table[0, 1] = business * 0.3
    residential = np.where((hours >= 18) & (hours <= 23), 1.0, 0.3)
    residential[[7, 8]] = 0.55
    residential[(hours <= 5)] = 0.08
    table[1, 0] = residential
    weekend = residential.copy()
    weekend[10:18] = 0.7
    table[1, 1] = weekend
    always_on = np.where((hours >= 7) & (hours <= 21), 0.75, 0.5)
    table[2, 0] = always_on
    table[2, 1] = always_on
    return table


PROFILE_TABLE = _profile_table()


def _mean_factor(weekend_share: float = 2 / 7) -> float:
    per_profile = (
        PROFILE_TABLE[:, 0, :].mean(axis=1) * (1 - weekend_share) + PROFILE_TABLE[:, 1, :].mean(axis=1) * weekend_share
    )
    return float(np.dot(PROFILE_SHARES, per_profile)) * (sum(ACTIVITY_RANGE) / 2)


def rows_for(devices: int, days: int, sessions_per_hour: float) -> int:
    """Expected number of normal rows (anomalies add well under 1% more)."""
    return round(devices * days * 24 * sessions_per_hour * _mean_factor())


def devices_for_rows(target_rows: int, days: int, sessions_per_hour: float) -> int:
    """How many devices give about ``target_rows`` rows over ``days`` days."""
    return max(1, round(target_rows / (days * 24 * sessions_per_hour * _mean_factor())))


# --------------------------------------------------------------------------------------------
# Seeded uniforms and normals as column expressions
# --------------------------------------------------------------------------------------------
def _uniform(seed: int, row_id: Column, k: int) -> Column:
    """A uniform in [0, 1) that depends only on (seed, row id, k)."""
    bits = F.xxhash64(F.lit(seed), row_id, F.lit(k)).bitwiseAND(F.lit(_MASK53))
    return bits.cast("double") / F.lit(_U53)


def _normal(seed: int, row_id: Column, k: int) -> Column:
    """A standard normal (Box-Muller on two hash uniforms)."""
    u1 = _uniform(seed, row_id, k) + F.lit(0.5 / _U53)
    u2 = _uniform(seed, row_id, k + 1000)
    return F.sqrt(F.lit(-2.0) * F.log(u1)) * F.cos(F.lit(2 * math.pi) * u2)


def _poisson(lam: Column, u: Column, z: Column, terms: int = 12) -> Column:
    """Poisson(lam): CDF inversion for small means, a rounded normal above.

    ``X = #{k < terms : u >= P(X <= k)}``, written as ``u * exp(lam) >= S_k(lam)`` with the partial
    sums ``S_k = sum_{j <= k} lam^j / j!`` in Horner form: plain arithmetic that Spark compiles
    (a fold over an array would run interpreted) and that stays linear in size. ``lam`` and
    ``u`` should be plain column references: each is read many times.
    """
    scaled = u * F.exp(lam)
    count = F.lit(0)
    for k in range(terms):
        partial = F.lit(1.0)
        for j in range(k, 0, -1):
            partial = F.lit(1.0) + lam / F.lit(float(j)) * partial
        count = count + F.when(scaled >= partial, 1).otherwise(0)
    large = F.greatest(F.lit(0.0), F.round(lam + F.sqrt(lam) * z))
    return F.when(lam < 5.0, count.cast("double")).otherwise(large).cast("long")


def _with_measures(
    df: DataFrame, seed: int, row_id: str, level: Column, bytes_mult: Column, dur_mult: Column
) -> DataFrame:
    """Add correlated session measures as ``_``-prefixed columns (see :func:`_measure_columns`).

    Three projections, each reading the previous one's columns, keep the expressions small.
    """
    rid = F.col(row_id)
    df = df.select(
        "*",
        bytes_mult.alias("_bytes_mult"),
        (
            F.col("base_bytes")
            * (F.lit(0.6) + F.lit(0.6) * level)
            * F.exp(F.lit(0.5) * _normal(seed, rid, 11) - 0.125)
            * bytes_mult
        ).alias("_bytes_down"),
        F.exp(F.lit(0.3) * _normal(seed, rid, 12) - 0.045).alias("_up_noise"),
        F.exp(F.lit(0.1) * _normal(seed, rid, 13)).alias("_pkt_noise"),
        (F.exp(F.lit(0.3) * _normal(seed, rid, 14)) * dur_mult).alias("_dur_noise"),
        _uniform(seed, rid, 15).alias("_u_err"),
        _normal(seed, rid, 16).alias("_z_err"),
    )
    df = df.withColumn("_bytes_up", F.col("_bytes_down") * F.col("up_ratio") * F.col("_up_noise"))
    df = df.withColumn(
        "_packets", (F.col("_bytes_down") + F.col("_bytes_up")) / F.col("packet_size") * F.col("_pkt_noise") + 1
    )
    df = df.withColumn("_lam", F.col("error_rate") * F.col("_packets") / F.lit(1000.0))
    duration = (
        F.col("base_duration")
        * F.pow(F.col("_bytes_down") / F.col("base_bytes") / F.col("_bytes_mult"), F.lit(0.6))
        * F.col("_dur_noise")
    )
    return df.select(
        "*",
        _poisson(F.col("_lam"), F.col("_u_err"), F.col("_z_err")).alias("_errors"),
        F.round(duration, 3).alias("_duration_s"),
    )


def _measure_columns() -> dict[str, Column]:
    return {
        "duration_s": F.col("_duration_s"),
        "bytes_up": F.round(F.col("_bytes_up")).cast("long"),
        "bytes_down": F.round(F.col("_bytes_down")).cast("long"),
        "packets": F.floor(F.col("_packets")).cast("long"),
        "errors": F.col("_errors"),
    }


# --------------------------------------------------------------------------------------------
# Driver-side parameter tables (one row per device; one row per anomaly episode / device-hour)
# --------------------------------------------------------------------------------------------
def _device_params(rng: np.random.Generator, devices: int, sites: int) -> pd.DataFrame:
    idx = np.arange(devices)
    profile = rng.choice(3, size=devices, p=PROFILE_SHARES)
    home = rng.integers(0, sites, size=devices)
    second = np.where(
        rng.random(devices) < 0.3, (home + 1 + rng.integers(0, max(sites - 1, 1), size=devices)) % sites, home
    )
    return pd.DataFrame(
        {
            "device_idx": idx.astype("int64"),
            "device_id": [f"dev-{i:06d}" for i in idx],
            "profile": profile.astype("int32"),
            "activity": rng.uniform(*ACTIVITY_RANGE, size=devices),
            "home_site": home.astype("int32"),
            "second_site": second.astype("int32"),
            "base_bytes": np.exp(rng.normal(13.0, 1.0, size=devices)),
            "up_ratio": rng.uniform(0.05, 0.4, size=devices),
            "packet_size": rng.uniform(600.0, 1400.0, size=devices),
            "base_duration": np.exp(rng.normal(math.log(120.0), 0.5, size=devices)),
            "error_rate": np.exp(rng.normal(math.log(0.5), 0.7, size=devices)),
        }
    )


def _episodes(
    rng: np.random.Generator,
    devices_pd: pd.DataFrame,
    *,
    sites: int,
    days: int,
    start_dow: int,
    sessions_per_hour: float,
    anomaly_fraction: float,
    start_epoch: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Anomaly episodes: device-hour modifications and extra sessions, sized to the label budget."""
    n_dev = len(devices_pd)
    hours_total = days * 24
    activity = devices_pd["activity"].to_numpy()
    profile = devices_pd["profile"].to_numpy()
    home = devices_pd["home_site"].to_numpy()
    second = devices_pd["second_site"].to_numpy()

    def rate(dev: int, slot: int) -> float:
        day, hour = divmod(slot, 24)
        weekend = 1 if (start_dow + day) % 7 >= 5 else 0
        return sessions_per_hour * activity[dev] * PROFILE_TABLE[profile[dev], weekend, hour]

    budget = anomaly_fraction * rows_for(n_dev, days, sessions_per_hour) / len(ANOMALY_TYPES)
    mods: dict[tuple[int, int], tuple] = {}  # (device, slot) -> (type, bytes_mult, dur_mult, flat, episode)
    extras: list[tuple] = []  # (episode, device, site, type, start_s, span_s, n, bytes_mult)
    episode = 0

    def daytime_slot(dev: int, span: int) -> int:
        day = int(rng.integers(0, days))
        start_hour = {0: 9, 1: 18, 2: 10}[int(profile[dev])]
        return min(day * 24 + start_hour + int(rng.integers(0, 3)), max(hours_total - span, 0))

    def add_mods(dev: int, slots: Sequence[int], kind: str, mults: Sequence[float], dur: float, flat: bool) -> float:
        expected = 0.0
        for slot, mult in zip(slots, mults, strict=True):
            if 0 <= slot < hours_total and (dev, slot) not in mods:
                mods[(dev, slot)] = (kind, float(mult), dur, flat, episode)
                expected += rate(dev, slot)
        return expected

    for kind in ANOMALY_TYPES:
        used, tries = 0.0, 0
        while (used < budget or tries == 0) and tries < 100_000:
            tries += 1
            dev = int(rng.integers(0, n_dev))
            if kind == "volume_spike":
                span = int(rng.integers(2, 7))
                start = daytime_slot(dev, span)
                mult = float(rng.uniform(8, 40))
                used += add_mods(dev, range(start, start + span), kind, [mult] * span, 2.0, False)
            elif kind == "slow_drift":
                span = int(rng.integers(72, 121))
                start = int(rng.integers(0, max(hours_total - span, 1)))
                top = float(rng.uniform(3, 6))
                ramp = [1 + (top - 1) * (i + 1) / span for i in range(span)]
                used += add_mods(dev, range(start, start + span), kind, ramp, 1.0, False)
            elif kind == "flatline":
                span = int(rng.integers(6, 25))
                start = int(rng.integers(0, max(hours_total - span, 1)))
                used += add_mods(dev, range(start, start + span), kind, [1.0] * span, 1.0, True)
            elif kind == "unusual_hours":
                business = np.flatnonzero(profile == 0)
                dev = int(rng.choice(business)) if len(business) else dev
                day = int(rng.integers(0, days))
                start_s = start_epoch + (day * 24 + 1) * 3600 + int(rng.integers(0, 3600))
                span_s = int(rng.integers(2, 5)) * 3600
                n = int(rng.integers(3, 13))
                extras.append((episode, dev, int(home[dev]), kind, start_s, span_s, n, 1.0))
                used += n
            elif kind == "new_site_burst":
                if sites > 2:
                    new_site = int(rng.integers(0, sites))
                    while new_site in (home[dev], second[dev]):
                        new_site = int(rng.integers(0, sites))
                else:  # too few sites to find an unused one: invent a site nobody uses
                    new_site = sites
                start_s = (
                    start_epoch + int(rng.integers(0, max(hours_total - 3, 1))) * 3600 + int(rng.integers(0, 3600))
                )
                span_s = int(rng.integers(1, 4)) * 3600
                n = int(rng.integers(10, 31)) * span_s // 3600
                extras.append((episode, dev, new_site, kind, start_s, span_s, n, float(rng.uniform(1.5, 4))))
                used += n
            else:  # collective
                site = int(home[dev])
                members = np.flatnonzero(home == site)
                if len(members) > 40:
                    members = rng.choice(members, size=40, replace=False)
                span = int(rng.integers(1, 3))
                start = daytime_slot(dev, span)
                mult = float(rng.uniform(4, 8))
                for member in members:
                    member = int(member)
                    used += add_mods(member, range(start, start + span), kind, [mult] * span, 1.5, False)
                    n = int(rng.integers(2, 6))
                    extras.append((episode, member, site, kind, start_epoch + start * 3600, span * 3600, n, mult))
                    used += n
            episode += 1

    mods_pd = pd.DataFrame(
        [(dev, slot, *value) for (dev, slot), value in sorted(mods.items())],
        columns=["device_idx", "slot", "mod_type", "mod_bytes_mult", "mod_dur_mult", "mod_flat", "mod_episode"],
    ).astype(
        {
            "device_idx": "int64",
            "slot": "int64",
            "mod_bytes_mult": "float64",
            "mod_dur_mult": "float64",
            "mod_flat": "bool",
            "mod_episode": "int64",
        }
    )
    extras_pd = pd.DataFrame(
        extras,
        columns=["episode", "device_idx", "site_idx", "anomaly_type", "start_s", "span_s", "n", "bytes_mult"],
    ).astype(
        {
            "episode": "int64",
            "device_idx": "int64",
            "site_idx": "int32",
            "start_s": "int64",
            "span_s": "int64",
            "n": "int32",
            "bytes_mult": "float64",
        }
    )
    return mods_pd, extras_pd


def _idiv(col: Column, divisor: int) -> Column:
    """Integer division of a non-negative long column."""
    return F.floor(col / F.lit(divisor)).cast("long")  # exact: ids stay far below 2**53


def _site_id(site_idx: Column) -> Column:
    return F.format_string("site-%03d", site_idx)


# --------------------------------------------------------------------------------------------
# The generator
# --------------------------------------------------------------------------------------------
def generate_telemetry(
    spark: SparkSession,
    *,
    devices: int,
    sites: int,
    days: int,
    start_date: str,
    sessions_per_hour: float,
    anomaly_fraction: float,
    seed: int,
    partitions: int,
) -> DataFrame:
    """Session telemetry with the columns in :data:`OUTPUT_COLUMNS` (see the module docstring).

    Deterministic: the same arguments give the same rows (row order is not guaranteed).
    """
    if devices < 1 or sites < 1 or days < 1 or sessions_per_hour <= 0 or partitions < 1:
        raise ValueError("devices, sites, days, partitions must be >= 1 and sessions_per_hour > 0")
    if not 0 <= anomaly_fraction < 0.5:
        raise ValueError(f"anomaly_fraction must be in [0, 0.5), got {anomaly_fraction}")
    start = dt.datetime.strptime(start_date, "%Y-%m-%d").replace(tzinfo=dt.UTC)
    start_epoch = int(start.timestamp())
    start_dow = start.weekday()  # Monday = 0
    rng = np.random.default_rng(seed)
    devices_pd = _device_params(rng, devices, sites)
    mods_pd, extras_pd = _episodes(
        rng,
        devices_pd,
        sites=sites,
        days=days,
        start_dow=start_dow,
        sessions_per_hour=sessions_per_hour,
        anomaly_fraction=anomaly_fraction,
        start_epoch=start_epoch,
    )
    device_df = F.broadcast(spark.createDataFrame(devices_pd))
    mods_df = F.broadcast(
        spark.createDataFrame(
            mods_pd,
            schema=(
                "device_idx long, slot long, mod_type string, mod_bytes_mult double, mod_dur_mult double, "
                "mod_flat boolean, mod_episode long"
            ),
        )
    )
    profile_lit = F.array(*[F.lit(float(v)) for v in PROFILE_TABLE.reshape(-1)])

    def level_at(hour_of_day: Column, weekend: Column) -> Column:
        return F.element_at(profile_lit, (F.col("profile") * 48 + weekend * 24 + hour_of_day + 1).cast("int"))

    # ---- normal sessions: K candidates per device-hour, thinned to the hour's rate ----
    k = max(2, math.ceil(2 * sessions_per_hour))
    hours_total = days * 24
    rid = F.col("id")
    candidates = spark.range(0, devices * hours_total * k, 1, numPartitions=partitions)
    slots = (
        candidates.select(
            rid,
            _idiv(rid, hours_total * k).alias("device_idx"),
            (_idiv(rid, k) % hours_total).alias("slot"),
        )
        .withColumn("hour", (F.col("slot") % 24).cast("int"))
        .withColumn("weekend", F.when((_idiv(F.col("slot"), 24) + start_dow) % 7 >= 5, 1).otherwise(0))
    )
    accept = _uniform(seed, rid, 1)
    normal = (
        # activity * level <= 1: dropping candidates above the bound first halves the join's input
        slots.where(accept < F.lit(sessions_per_hour / k))
        .join(device_df, "device_idx")
        .withColumn("level", level_at(F.col("hour"), F.col("weekend")))
        .where(accept < F.lit(sessions_per_hour / k) * F.col("activity") * F.col("level"))
        .join(mods_df, ["device_idx", "slot"], "left")
    )
    bytes_mult = F.coalesce(F.col("mod_bytes_mult"), F.lit(1.0))
    dur_mult = F.coalesce(F.col("mod_dur_mult"), F.lit(1.0))
    normal = _with_measures(normal, seed, "id", F.col("level"), bytes_mult, dur_mult)
    m = _measure_columns()
    flat = F.coalesce(F.col("mod_flat"), F.lit(False))
    flat_values = {  # a stuck sensor repeats one reading: the device's typical session
        "duration_s": F.round(F.col("base_duration"), 3),
        "bytes_up": F.round(F.col("base_bytes") * F.col("up_ratio")).cast("long"),
        "bytes_down": F.round(F.col("base_bytes")).cast("long"),
        "packets": F.floor(F.col("base_bytes") * (1 + F.col("up_ratio")) / F.col("packet_size")).cast("long") + 1,
        "errors": F.lit(0).cast("long"),
    }
    on_second = _uniform(seed, rid, 2) < 0.2
    event_s = (F.lit(start_epoch) + F.col("slot") * 3600).cast("double") + F.floor(
        _uniform(seed, rid, 3) * 3_600_000
    ) / 1000.0
    normal_out = normal.select(
        F.format_string("t%012d", rid).alias("event_id"),
        F.col("device_id"),
        _site_id(F.when(on_second, F.col("second_site")).otherwise(F.col("home_site"))).alias("site_id"),
        F.timestamp_seconds(event_s).alias("event_time"),
        *[F.when(flat, flat_values[name]).otherwise(col).alias(name) for name, col in m.items()],
        F.when(F.col("mod_type").isNotNull(), 1).otherwise(0).alias("label"),
        F.col("mod_type").alias("anomaly_type"),
    )

    # ---- extra sessions of additive episodes (few: a small explode, not a range) ----
    extras_df = spark.createDataFrame(
        extras_pd,
        schema=(
            "episode long, device_idx long, site_idx int, anomaly_type string, start_s long, span_s long, n int, "
            "bytes_mult double"
        ),
    )
    xid = F.col("xid")
    extra = (
        extras_df.select("*", F.explode(F.sequence(F.lit(0), F.col("n") - 1)).alias("j"))
        # a collective episode adds rows for many devices: the row id must name the device too
        .withColumn("xid", F.xxhash64(F.lit(seed), F.col("episode"), F.col("device_idx"), F.col("j")))
        .join(device_df, "device_idx")
    )
    extra = _with_measures(extra, seed, "xid", F.lit(0.8), F.col("bytes_mult"), F.lit(1.0))
    xm = _measure_columns()
    extra_s = F.col("start_s").cast("double") + F.floor(_uniform(seed, xid, 3) * F.col("span_s") * 1000) / 1000.0
    extra_out = extra.select(
        F.format_string("x%06d-%06d-%04d", F.col("episode"), F.col("device_idx"), F.col("j")).alias("event_id"),
        F.col("device_id"),
        _site_id(F.col("site_idx")).alias("site_id"),
        F.timestamp_seconds(extra_s).alias("event_time"),
        *[col.alias(name) for name, col in xm.items()],
        F.lit(1).alias("label"),
        F.col("anomaly_type"),
    )
    return normal_out.unionByName(extra_out).select(
        "event_id",
        "device_id",
        "site_id",
        "event_time",
        F.col("duration_s").cast("double"),
        "bytes_up",
        "bytes_down",
        "packets",
        "errors",
        F.col("label").cast("int"),
        F.col("anomaly_type").cast("string"),
    )
