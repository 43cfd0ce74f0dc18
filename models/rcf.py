"""Random Cut Forest (RCF) anomaly detector: a numpy core and a Spark ML Estimator/Model pair.

The score follows the definition of the randomcutforest-by-aws Java library (the one behind
Amazon SageMaker's RANDOM_CUT_FOREST and Kinesis Data Analytics' RANDOM_CUT_FOREST functions):

* A tree is built over a sample of points by random cuts (Guha et al., ICML 2016): the cut
  dimension is drawn with probability proportional to the side length of the bounding box in
  that dimension, the cut value uniformly along that side. Bounding boxes are tight on the
  points under each node; identical points share one leaf whose mass counts them.
* A query point goes down to a leaf at depth ``h`` (the root has depth 0). If the leaf point
  equals the query, the base score is ``damp(m, M) * scoreSeen(h, m)`` with
  ``scoreSeen = 1 / (h + log2(m + 1))`` and ``damp = 1 - m / (2M)`` (``m`` leaf mass, ``M``
  tree mass) and nothing above changes it. Otherwise the base score is ``scoreUnseen(h) =
  1 / (h + 1)``, and walking back up, every ancestor at depth ``k`` mixes in its own
  contribution: ``s = p * 1 / (k + 1) + (1 - p) * s``, where ``p`` is the probability that a
  random cut of the node's box grown to contain the query separates the query
  (sum of the growth of each side / sum of the sides of the grown box). Once ``p`` is 0 the
  query is inside the box, and inside every box above, so the walk stops.
* A tree's score is multiplied by ``log2(M + 1)``; the forest score is the mean over trees.
  Inliers score around 1 or below, clear outliers well above (the SageMaker convention flags
  scores above mean + 3 standard deviations).

Attribution splits each tree's score among the dimensions as the library's DiVector does
(``AnomalyAttributionVisitor``), in proportion to each dimension's share of the separation
probability; the high and low directions are added up, so the attribution of a row sums to its
score. For a query equal to a leaf point (a duplicate of a training point) the score is split
evenly, a simplification of the library's counterfactual "shadow box".

Input design (Spark): ``featuresCol`` is one column holding a ``pyspark.ml.linalg`` Vector (what
``VectorAssembler`` produces) or an ``array<numeric>``; build it with ``VectorAssembler`` from
numeric columns. Rows whose features are null, of the wrong length or not finite get a null
score. ``transform`` hands the scoring UDF one double column per feature (``features[j]``),
so Arrow delivers contiguous float64 arrays that are copied column by column into the matrix
(no per-row Python work); ``featuresCol`` is still the one public input.

Scoring cost: a row goes down each tree (trees are the outer loop, so one tree's nodes stay in
cache; rows descend in lock-step groups of 8 to overlap memory latency), then back up only
until the first ancestor whose box contains it. Each node's box is stored as one contiguous
``[mins, maxes]`` row next to its precomputed sum of sides, so an ancestor costs the query's
gaps and one division. ``score`` runs a kernel without the attribution bookkeeping;
``score_and_attribution`` returns bit-for-bit the same scores.

Scoring is compiled with numba when it is importable (it is a dependency of the project); without
numba the same kernels run as plain Python, correct but about 100 times slower.
"""

from __future__ import annotations

import io
import math
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from pyspark import keyword_only
from pyspark.ml import Estimator, Model
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasFeaturesCol, HasPredictionCol, HasSeed
from pyspark.ml.util import (
    DefaultParamsReadable,
    DefaultParamsReader,
    DefaultParamsWritable,
    DefaultParamsWriter,
    MLReadable,
    MLReader,
    MLWritable,
    MLWriter,
)

try:  # numba is what makes scoring fast; fall back to plain Python kernels when missing
    import numba

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only where numba is not installed
    numba = None
    HAVE_NUMBA = False


def _njit(func: Any) -> Any:
    """Compile with numba, caching the machine code on disk where the package is writable.

    Every Spark Python worker would otherwise recompile (seconds each). Caching is impossible
    when the module is imported from a zip (``--py-files``); numba refuses at decoration time,
    and we compile in memory instead.
    """
    if not HAVE_NUMBA:  # pragma: no cover
        return func
    try:
        return numba.njit(nogil=True, cache=True)(func)
    except RuntimeError:  # no cache locator (e.g. imported from a zip)
        return numba.njit(nogil=True, cache=False)(func)


__all__ = [
    "Forest",
    "RandomCutForest",
    "RandomCutForestModel",
    "top_reasons",
    "HAVE_NUMBA",
]

FOREST_FILE = "forest.npz"
_FORMAT_VERSION = 1
_DEFAULT_SEED = 20160620  # fixed (HasSeed's default hashes the class name, which varies per process)


# --------------------------------------------------------------------------------------------
# Compiled kernels
# --------------------------------------------------------------------------------------------
@_njit
def _build_tree(points, uniforms, first, cut_dim, cut_val, left, right, mass, box_min, box_max):
    """Build one tree over ``points`` into the node arrays, starting at node index ``first``.

    ``uniforms`` holds two U[0, 1) draws per internal node (cut dimension, cut position), drawn
    by the caller so the tree depends only on the numpy seed. Returns (node count, max depth).
    """
    n, d = points.shape
    idx = np.arange(n)
    stack_node = np.empty(2 * n + 1, np.int64)
    stack_lo = np.empty(2 * n + 1, np.int64)
    stack_hi = np.empty(2 * n + 1, np.int64)
    stack_depth = np.empty(2 * n + 1, np.int64)
    lo_box = np.empty(d)
    hi_box = np.empty(d)
    sp = 0
    stack_node[0] = first
    stack_lo[0] = 0
    stack_hi[0] = n
    stack_depth[0] = 0
    sp = 1
    count = 1
    used = 0
    max_depth = 0
    while sp > 0:
        sp -= 1
        node = stack_node[sp]
        lo = stack_lo[sp]
        hi = stack_hi[sp]
        depth = stack_depth[sp]
        if depth > max_depth:
            max_depth = depth
        for j in range(d):
            lo_box[j] = np.inf
            hi_box[j] = -np.inf
        for t in range(lo, hi):
            i = idx[t]
            for j in range(d):
                v = points[i, j]
                if v < lo_box[j]:
                    lo_box[j] = v
                if v > hi_box[j]:
                    hi_box[j] = v
        total = 0.0
        for j in range(d):
            box_min[node, j] = lo_box[j]
            box_max[node, j] = hi_box[j]
            total += hi_box[j] - lo_box[j]
        mass[node] = hi - lo
        if total <= 0.0:
            cut_dim[node] = -1
            cut_val[node] = 0.0
            left[node] = -1
            right[node] = -1
            continue
        # dimension with probability proportional to its range
        r = uniforms[used, 0] * total
        dim = -1
        acc = 0.0
        for j in range(d):
            side = hi_box[j] - lo_box[j]
            if side > 0.0:
                acc += side
                dim = j
                if r < acc:
                    break
        c = lo_box[dim] + uniforms[used, 1] * (hi_box[dim] - lo_box[dim])
        if c >= hi_box[dim]:  # rounding pushed the cut onto the max: keep both sides non-empty
            c = lo_box[dim]
        used += 1
        # partition idx[lo:hi]: x[dim] <= c goes left, as in the Java library
        a = lo
        b = hi - 1
        while a <= b:
            if points[idx[a], dim] <= c:
                a += 1
            else:
                tmp = idx[a]
                idx[a] = idx[b]
                idx[b] = tmp
                b -= 1
        lnode = first + count
        rnode = first + count + 1
        count += 2
        cut_dim[node] = dim
        cut_val[node] = c
        left[node] = lnode
        right[node] = rnode
        stack_node[sp] = rnode
        stack_lo[sp] = a
        stack_hi[sp] = hi
        stack_depth[sp] = depth + 1
        sp += 1
        stack_node[sp] = lnode
        stack_lo[sp] = lo
        stack_hi[sp] = a
        stack_depth[sp] = depth + 1
        sp += 1
    return count, max_depth


_GROUP = 8  # rows that go down a tree in lock step


@_njit
def _descend_group(X, r0, gn, root, cut_dim, cut_val, left, path, nodes, dims, depths):
    """Send rows ``r0 .. r0 + gn`` down one tree in lock step, recording their paths.

    The descents are independent chains of dependent loads; interleaving them lets the CPU
    overlap their memory latency. Children are adjacent (right = left + 1), so a step is a
    branch-free ``left + (x > cut)``.
    """
    for g in range(gn):
        nodes[g] = root
        dims[g] = cut_dim[root]
        depths[g] = 0
    active = gn
    while active > 0:
        active = 0
        for g in range(gn):
            cd = dims[g]
            if cd >= 0:
                nd = nodes[g]
                path[g, depths[g]] = nd
                nd = left[nd] + (X[r0 + g, cd] > cut_val[nd])
                nodes[g] = nd
                dims[g] = cut_dim[nd]
                depths[g] += 1
                active += 1


@_njit
def _score_kernel(X, roots, tree_mass, cut_dim, cut_val, left, mass, box, side_sum, max_depth):
    """Mean over trees of the normalised AnomalyScoreVisitor score.

    ``box[i]`` is node ``i``'s bounding box as ``[min_0 .. min_{d-1}, max_0 .. max_{d-1}]``
    (one contiguous row, so the upward pass touches one or two cache lines per node) and
    ``side_sum[i]`` the sum of its sides, so the separation probability of an ancestor costs
    only the gaps of the query: ``p = gap / (side_sum + gap)``. Trees are the outer loop (one
    tree's nodes stay in cache while all rows go through it).
    """
    group = _GROUP
    n, d = X.shape
    n_trees = roots.shape[0]
    scores = np.zeros(n)
    path = np.empty((group, max_depth + 1), np.int64)
    nodes = np.empty(group, np.int64)
    dims = np.empty(group, np.int64)
    depths = np.empty(group, np.int64)
    inv_ln2 = 1.0 / math.log(2.0)
    unseen = np.empty(max_depth + 2)  # scoreUnseen(k) = 1 / (k + 1)
    for k in range(max_depth + 2):
        unseen[k] = 1.0 / (k + 1.0)
    for t in range(n_trees):
        big_m = tree_mass[t]
        norm = math.log(big_m + 1.0) * inv_ln2
        root = roots[t]
        for r0 in range(0, n, group):
            gn = min(group, n - r0)
            _descend_group(X, r0, gn, root, cut_dim, cut_val, left, path, nodes, dims, depths)
            for g in range(gn):
                r = r0 + g
                node = nodes[g]
                depth = depths[g]
                dist = 0.0  # L1 distance to the leaf point (a leaf's box is its point)
                for j in range(d):
                    dist += abs(X[r, j] - box[node, j])
                if dist == 0.0:
                    # seen: damp * scoreSeen, and every box above contains the point
                    m = mass[node]
                    s = (1.0 - m / (2.0 * big_m)) / (depth + math.log(m + 1.0) * inv_ln2)
                else:
                    s = unseen[depth]
                    for k in range(depth - 1, -1, -1):
                        nd = path[g, k]
                        sum_gap = 0.0
                        for j in range(d):
                            x = X[r, j]
                            sum_gap += max(x - box[nd, d + j], 0.0) + max(box[nd, j] - x, 0.0)
                        if sum_gap <= 0.0:
                            break  # inside this box, hence inside every box above
                        p = sum_gap / (side_sum[nd] + sum_gap)
                        s = s + p * (unseen[k] - s)
                scores[r] += s * norm
    for r in range(n):
        scores[r] /= n_trees
    return scores


@_njit
def _attr_kernel(X, roots, tree_mass, cut_dim, cut_val, left, mass, box, side_sum, max_depth):
    """Scores (bit for bit those of ``_score_kernel``) and the DiVector attribution."""
    group = _GROUP
    n, d = X.shape
    n_trees = roots.shape[0]
    scores = np.zeros(n)
    attr = np.zeros((n, d))
    path = np.empty((group, max_depth + 1), np.int64)
    nodes = np.empty(group, np.int64)
    dims = np.empty(group, np.int64)
    depths = np.empty(group, np.int64)
    a = np.zeros(d)
    gaps = np.zeros(d)
    inv_ln2 = 1.0 / math.log(2.0)
    unseen = np.empty(max_depth + 2)
    for k in range(max_depth + 2):
        unseen[k] = 1.0 / (k + 1.0)
    for t in range(n_trees):
        big_m = tree_mass[t]
        norm = math.log(big_m + 1.0) * inv_ln2
        root = roots[t]
        for r0 in range(0, n, group):
            gn = min(group, n - r0)
            _descend_group(X, r0, gn, root, cut_dim, cut_val, left, path, nodes, dims, depths)
            for g in range(gn):
                r = r0 + g
                node = nodes[g]
                depth = depths[g]
                dist = 0.0
                for j in range(d):
                    dist += abs(X[r, j] - box[node, j])
                if dist == 0.0:
                    m = mass[node]
                    s = (1.0 - m / (2.0 * big_m)) / (depth + math.log(m + 1.0) * inv_ln2)
                    for j in range(d):
                        a[j] = s / d
                else:
                    s = unseen[depth]
                    for j in range(d):
                        a[j] = s * abs(X[r, j] - box[node, j]) / dist
                    for k in range(depth - 1, -1, -1):
                        nd = path[g, k]
                        sum_gap = 0.0
                        for j in range(d):
                            x = X[r, j]
                            gaps[j] = max(x - box[nd, d + j], 0.0) + max(box[nd, j] - x, 0.0)
                            sum_gap += gaps[j]
                        if sum_gap <= 0.0:
                            break
                        sum_new = side_sum[nd] + sum_gap
                        p = sum_gap / sum_new
                        u = unseen[k]
                        s = s + p * (u - s)
                        q = 1.0 - p
                        for j in range(d):
                            a[j] = gaps[j] / sum_new * u + q * a[j]
                scores[r] += s * norm
                for j in range(d):
                    attr[r, j] += a[j] * norm
    for r in range(n):
        scores[r] /= n_trees
        for j in range(d):
            attr[r, j] /= n_trees
    return scores, attr


# --------------------------------------------------------------------------------------------
# Pure numpy API
# --------------------------------------------------------------------------------------------
_ARRAY_FIELDS = ("roots", "tree_mass", "cut_dim", "cut_val", "left", "right", "mass",
                 "box_min", "box_max")


class Forest:
    """A fitted random cut forest held in flat node arrays (usable without Spark).

    Node ``i`` (of all trees together): ``cut_dim[i]`` (-1 for a leaf), ``cut_val[i]``,
    ``left[i]``/``right[i]`` (absolute node indices, -1 for a leaf), ``mass[i]`` (points under
    the node), ``box_min[i]``/``box_max[i]`` (bounding box; a leaf's box is its point).
    ``roots[t]`` and ``tree_mass[t]`` describe tree ``t``.
    """

    def __init__(self, roots: np.ndarray, tree_mass: np.ndarray, cut_dim: np.ndarray,
                 cut_val: np.ndarray, left: np.ndarray, right: np.ndarray, mass: np.ndarray,
                 box_min: np.ndarray, box_max: np.ndarray, max_depth: int) -> None:
        self.roots = np.ascontiguousarray(roots, dtype=np.int64)
        self.tree_mass = np.ascontiguousarray(tree_mass, dtype=np.int64)
        self.cut_dim = np.ascontiguousarray(cut_dim, dtype=np.int64)
        self.cut_val = np.ascontiguousarray(cut_val, dtype=np.float64)
        self.left = np.ascontiguousarray(left, dtype=np.int64)
        self.right = np.ascontiguousarray(right, dtype=np.int64)
        self.mass = np.ascontiguousarray(mass, dtype=np.int64)
        self.box_min = np.ascontiguousarray(box_min, dtype=np.float64)
        self.box_max = np.ascontiguousarray(box_max, dtype=np.float64)
        self.max_depth = int(max_depth)
        # derived scoring layout: one contiguous [mins, maxes] row per node, and its side sum
        self._box = np.ascontiguousarray(np.hstack([self.box_min, self.box_max]))
        self._side_sum = (self.box_max - self.box_min).sum(axis=1)
        internal = self.cut_dim >= 0
        if not np.array_equal(self.right[internal], self.left[internal] + 1):
            raise ValueError("forest arrays are inconsistent: children must be adjacent")

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def fit(cls, X: Any, num_trees: int = 100, samples: int = 256,
            seed: Optional[int] = None) -> "Forest":
        """Build ``num_trees`` trees, each on ``samples`` rows of ``X`` drawn without replacement.

        When ``X`` has at least ``num_trees * samples`` rows the trees get disjoint samples;
        with fewer rows each tree draws its own sample (all rows if fewer than ``samples``).
        Rows with a non-finite value are ignored. Deterministic for a given ``seed``.
        """
        X = _as_matrix(X)
        X = X[np.isfinite(X).all(axis=1)]
        if X.shape[0] == 0:
            raise ValueError("cannot fit a random cut forest on no (finite) rows")
        if num_trees < 1 or samples < 1:
            raise ValueError("num_trees and samples must be positive")
        rng = np.random.default_rng(seed)
        n = X.shape[0]
        if n >= num_trees * samples:
            order = rng.permutation(n)[: num_trees * samples].reshape(num_trees, samples)
            tree_rows = [order[t] for t in range(num_trees)]
        elif n > samples:
            tree_rows = [rng.choice(n, size=samples, replace=False) for _ in range(num_trees)]
        else:
            tree_rows = [np.arange(n) for _ in range(num_trees)]
        return cls.from_samples([X[rows] for rows in tree_rows], rng=rng)

    @classmethod
    def from_samples(cls, tree_samples: Sequence[np.ndarray],
                     rng: Optional[np.random.Generator] = None,
                     seed: Optional[int] = None) -> "Forest":
        """Build one tree per given sample matrix (all with the same number of columns)."""
        if rng is None:
            rng = np.random.default_rng(seed)
        tree_samples = [_as_matrix(s) for s in tree_samples]
        d = tree_samples[0].shape[1]
        total = sum(2 * s.shape[0] - 1 for s in tree_samples)
        cut_dim = np.full(total, -1, np.int64)
        cut_val = np.zeros(total)
        left = np.full(total, -1, np.int64)
        right = np.full(total, -1, np.int64)
        mass = np.zeros(total, np.int64)
        box_min = np.zeros((total, d))
        box_max = np.zeros((total, d))
        roots = np.zeros(len(tree_samples), np.int64)
        tree_mass = np.zeros(len(tree_samples), np.int64)
        nxt = 0
        max_depth = 0
        for t, pts in enumerate(tree_samples):
            if pts.shape[1] != d:
                raise ValueError("all tree samples must have the same number of columns")
            uniforms = rng.random((max(pts.shape[0] - 1, 1), 2))
            count, depth = _build_tree(np.ascontiguousarray(pts), uniforms, nxt, cut_dim,
                                       cut_val, left, right, mass, box_min, box_max)
            roots[t] = nxt
            tree_mass[t] = pts.shape[0]
            nxt += int(count)
            max_depth = max(max_depth, int(depth))
        return cls(roots, tree_mass, cut_dim[:nxt], cut_val[:nxt], left[:nxt], right[:nxt],
                   mass[:nxt], box_min[:nxt], box_max[:nxt], max_depth)

    # ---- properties -----------------------------------------------------------------------
    @property
    def num_trees(self) -> int:
        return int(self.roots.shape[0])

    @property
    def num_features(self) -> int:
        return int(self.box_min.shape[1])

    @property
    def num_nodes(self) -> int:
        return int(self.cut_dim.shape[0])

    # ---- scoring ----------------------------------------------------------------------------
    def score(self, X: Any) -> np.ndarray:
        """Anomaly score per row (aws RCF scale); NaN for rows with a non-finite value."""
        return self._run(X, want_attr=False)[0]

    def attribution(self, X: Any) -> np.ndarray:
        """Per-feature share of the score, shape (rows, features); rows sum to the score."""
        return self._run(X, want_attr=True)[1]

    def score_and_attribution(self, X: Any) -> Tuple[np.ndarray, np.ndarray]:
        """Both at the cost of one pass."""
        return self._run(X, want_attr=True)

    def _run(self, X: Any, want_attr: bool) -> Tuple[np.ndarray, np.ndarray]:
        X = _as_matrix(X)
        if X.shape[1] != self.num_features:
            raise ValueError(
                f"forest was fitted on {self.num_features} features, got {X.shape[1]}")
        n = X.shape[0]
        scores = np.full(n, np.nan)
        attr = np.full((n, self.num_features), np.nan) if want_attr else None
        ok = np.isfinite(X).all(axis=1)
        if ok.any():
            Xo = X if ok.all() else X[ok]
            args = (np.ascontiguousarray(Xo), self.roots, self.tree_mass, self.cut_dim,
                    self.cut_val, self.left, self.mass, self._box, self._side_sum,
                    self.max_depth)
            if want_attr:
                s, a = _attr_kernel(*args)
                attr[ok] = a
            else:
                s = _score_kernel(*args)
            scores[ok] = s
        return scores, attr

    # ---- persistence --------------------------------------------------------------------------
    def to_arrays(self) -> Dict[str, np.ndarray]:
        out = {name: getattr(self, name) for name in _ARRAY_FIELDS}
        out["max_depth"] = np.array(self.max_depth, np.int64)
        out["format_version"] = np.array(_FORMAT_VERSION, np.int64)
        return out

    @classmethod
    def from_arrays(cls, arrays: Dict[str, np.ndarray]) -> "Forest":
        version = int(arrays.get("format_version", _FORMAT_VERSION))
        if version != _FORMAT_VERSION:
            raise ValueError(f"unsupported forest format version {version}")
        return cls(*(arrays[name] for name in _ARRAY_FIELDS), max_depth=int(arrays["max_depth"]))

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez_compressed(buf, **self.to_arrays())
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Forest":
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return cls.from_arrays({k: npz[k] for k in npz.files})

    def __getstate__(self) -> Dict[str, np.ndarray]:
        return self.to_arrays()

    def __setstate__(self, state: Dict[str, np.ndarray]) -> None:
        self.__dict__.update(Forest.from_arrays(state).__dict__)

    def __repr__(self) -> str:
        return (f"Forest(num_trees={self.num_trees}, num_features={self.num_features}, "
                f"num_nodes={self.num_nodes}, max_depth={self.max_depth})")


def top_reasons(attribution: Any, names: Sequence[str], k: int = 3) -> List[str]:
    """Names of the ``k`` features with the largest attribution, largest first.

    ``attribution`` is one row of the attribution column (list or array, same order as
    ``names``). Returns [] for a null attribution. Ties keep the order of ``names``.
    """
    if attribution is None:
        return []
    values = np.asarray(attribution, dtype=np.float64)
    if values.shape != (len(names),):
        raise ValueError(f"attribution has {values.size} values for {len(names)} names")
    order = np.argsort(-values, kind="stable")[: max(int(k), 0)]
    return [names[i] for i in order]


def _as_matrix(X: Any) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X.reshape(-1, 1) if X.size else X.reshape(0, 0)
    if X.ndim != 2:
        raise ValueError(f"expected a 2-d matrix of features, got shape {X.shape}")
    return X


# --------------------------------------------------------------------------------------------
# Spark ML Params, Estimator and Model
# --------------------------------------------------------------------------------------------
def _bounded_int(name: str, lo: int, hi: int):
    def convert(value: Any) -> int:
        value = TypeConverters.toInt(value)
        if not lo <= value <= hi:
            raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
        return value
    return convert


def _bounded_float(name: str, lo: float, hi: float, open_ends: bool = False):
    def convert(value: Any) -> float:
        value = TypeConverters.toFloat(value)
        ok = (lo < value < hi) if open_ends else (lo <= value <= hi)
        if not ok or math.isnan(value):
            ends = "(%s, %s)" % (lo, hi) if open_ends else "[%s, %s]" % (lo, hi)
            raise ValueError(f"{name} must be in {ends}, got {value}")
        return value
    return convert


def _one_of(name: str, choices: Sequence[str]):
    def convert(value: Any) -> str:
        value = TypeConverters.toString(value)
        if value not in choices:
            raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
        return value
    return convert


class _RandomCutForestParams(HasFeaturesCol, HasPredictionCol, HasSeed):
    """Params shared by :class:`RandomCutForest` and :class:`RandomCutForestModel`."""

    scoreCol: Param[str] = Param(
        Params._dummy(), "scoreCol", "output column for the anomaly score (double)",
        typeConverter=TypeConverters.toString)
    attributionCol: Param[str] = Param(
        Params._dummy(), "attributionCol",
        "output column for per-feature attributions (array<double>); empty = not produced",
        typeConverter=TypeConverters.toString)
    numTrees: Param[int] = Param(
        Params._dummy(), "numTrees", "number of trees (SageMaker num_trees), in [50, 1000]",
        typeConverter=_bounded_int("numTrees", 50, 1000))
    numSamplesPerTree: Param[int] = Param(
        Params._dummy(), "numSamplesPerTree",
        "training points per tree (SageMaker num_samples_per_tree), in [1, 2048]",
        typeConverter=_bounded_int("numSamplesPerTree", 1, 2048))
    thresholdMethod: Param[str] = Param(
        Params._dummy(), "thresholdMethod",
        "how the anomaly threshold is set from training scores: 'sigma' (mean + "
        "thresholdSigmas * std) or 'quantile' (thresholdQuantile)",
        typeConverter=_one_of("thresholdMethod", ("sigma", "quantile")))
    thresholdSigmas: Param[float] = Param(
        Params._dummy(), "thresholdSigmas", "standard deviations above the mean, >= 0",
        typeConverter=_bounded_float("thresholdSigmas", 0.0, 1e6))
    thresholdQuantile: Param[float] = Param(
        Params._dummy(), "thresholdQuantile", "quantile of training scores, in (0, 1)",
        typeConverter=_bounded_float("thresholdQuantile", 0.0, 1.0, open_ends=True))

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._setDefault(
            featuresCol="features", predictionCol="rcf_anomaly", scoreCol="rcf_score",
            attributionCol="", numTrees=100, numSamplesPerTree=256, thresholdMethod="sigma",
            thresholdSigmas=3.0, thresholdQuantile=0.99, seed=_DEFAULT_SEED)

    def getScoreCol(self) -> str:
        return self.getOrDefault(self.scoreCol)

    def getAttributionCol(self) -> str:
        return self.getOrDefault(self.attributionCol) or ""

    def getNumTrees(self) -> int:
        return self.getOrDefault(self.numTrees)

    def getNumSamplesPerTree(self) -> int:
        return self.getOrDefault(self.numSamplesPerTree)

    def getThresholdMethod(self) -> str:
        return self.getOrDefault(self.thresholdMethod)

    def getThresholdSigmas(self) -> float:
        return self.getOrDefault(self.thresholdSigmas)

    def getThresholdQuantile(self) -> float:
        return self.getOrDefault(self.thresholdQuantile)


class RandomCutForest(Estimator, _RandomCutForestParams, DefaultParamsReadable,
                      DefaultParamsWritable):
    """Unsupervised Random Cut Forest, trained on a sample of the input, scored by Spark.

    ``featuresCol`` holds a Vector (e.g. from ``VectorAssembler``) or an array of numbers.
    Training draws ``numTrees * numSamplesPerTree`` rows with ``seed`` (each tree gets its own
    disjoint share when there are enough rows), builds the trees on the driver and sets the
    anomaly threshold from the scores of the sampled rows.

    >>> rcf = RandomCutForest(featuresCol="features", numTrees=100, attributionCol="why")
    >>> model = rcf.fit(train_df)            # doctest: +SKIP
    >>> model.transform(df).select("rcf_score", "rcf_anomaly", "why")   # doctest: +SKIP
    """

    @keyword_only
    def __init__(self, *, featuresCol: str = "features", scoreCol: str = "rcf_score",
                 predictionCol: str = "rcf_anomaly", attributionCol: str = "",
                 numTrees: int = 100, numSamplesPerTree: int = 256,
                 thresholdMethod: str = "sigma", thresholdSigmas: float = 3.0,
                 thresholdQuantile: float = 0.99, seed: Optional[int] = None) -> None:
        super().__init__()
        kwargs = self._input_kwargs
        self.setParams(**kwargs)

    @keyword_only
    def setParams(self, *, featuresCol: str = "features", scoreCol: str = "rcf_score",
                  predictionCol: str = "rcf_anomaly", attributionCol: str = "",
                  numTrees: int = 100, numSamplesPerTree: int = 256,
                  thresholdMethod: str = "sigma", thresholdSigmas: float = 3.0,
                  thresholdQuantile: float = 0.99,
                  seed: Optional[int] = None) -> "RandomCutForest":
        kwargs = self._input_kwargs
        return self._set(**kwargs)

    def setFeaturesCol(self, value: str) -> "RandomCutForest":
        return self._set(featuresCol=value)

    def setScoreCol(self, value: str) -> "RandomCutForest":
        return self._set(scoreCol=value)

    def setPredictionCol(self, value: str) -> "RandomCutForest":
        return self._set(predictionCol=value)

    def setAttributionCol(self, value: str) -> "RandomCutForest":
        return self._set(attributionCol=value)

    def setNumTrees(self, value: int) -> "RandomCutForest":
        return self._set(numTrees=value)

    def setNumSamplesPerTree(self, value: int) -> "RandomCutForest":
        return self._set(numSamplesPerTree=value)

    def setThresholdMethod(self, value: str) -> "RandomCutForest":
        return self._set(thresholdMethod=value)

    def setThresholdSigmas(self, value: float) -> "RandomCutForest":
        return self._set(thresholdSigmas=value)

    def setThresholdQuantile(self, value: float) -> "RandomCutForest":
        return self._set(thresholdQuantile=value)

    def setSeed(self, value: int) -> "RandomCutForest":
        return self._set(seed=value)

    def _fit(self, dataset: Any) -> "RandomCutForestModel":
        from pyspark.sql import functions as F

        num_trees = self.getNumTrees()
        per_tree = self.getNumSamplesPerTree()
        seed = self.getSeed()
        feats = _features_as_array(dataset, self.getFeaturesCol()).alias("f")
        source_df = dataset.select(feats).where(F.col("f").isNotNull())
        total = source_df.count()
        if total == 0:
            raise ValueError("RandomCutForest: no rows with non-null features to train on")
        wanted = num_trees * per_tree
        # oversample so the Bernoulli draw almost never falls short of numTrees * samples
        fraction = (wanted + 5.0 * math.sqrt(wanted) + 10.0) / total
        sample_df = source_df if fraction >= 1.0 else source_df.sample(False, fraction, seed)
        pool = _collect_matrix(sample_df, "f")
        pool = pool[np.isfinite(pool).all(axis=1)] if pool.size else pool
        if pool.shape[0] == 0:
            raise ValueError("RandomCutForest: the training sample has no finite rows")
        # make the pool independent of the order in which partitions arrive
        pool = pool[np.lexsort(pool.T[::-1])]
        forest = Forest.fit(pool, num_trees=num_trees, samples=per_tree, seed=seed)
        threshold = _threshold(forest.score(pool), self.getThresholdMethod(),
                               self.getThresholdSigmas(), self.getThresholdQuantile())
        model = RandomCutForestModel(forest=forest, threshold=threshold)
        model._resetUid(self.uid)
        return self._copyValues(model)


class RandomCutForestModel(Model, _RandomCutForestParams, MLReadable, MLWritable):
    """Fitted Random Cut Forest: adds ``scoreCol``, ``predictionCol`` (score > threshold;
    empty name = not produced) and, when set, ``attributionCol``.
    """

    def __init__(self, forest: Optional[Forest] = None,
                 threshold: Optional[float] = None) -> None:
        super().__init__()
        self._forest = forest
        self._threshold = None if threshold is None else float(threshold)

    @property
    def forest(self) -> Forest:
        if self._forest is None:
            raise ValueError("this RandomCutForestModel holds no forest")
        return self._forest

    @property
    def threshold(self) -> float:
        """Score above which a row is flagged (from the training-sample scores)."""
        return self._threshold

    @property
    def numFeatures(self) -> int:
        return self.forest.num_features

    def setFeaturesCol(self, value: str) -> "RandomCutForestModel":
        return self._set(featuresCol=value)

    def setScoreCol(self, value: str) -> "RandomCutForestModel":
        return self._set(scoreCol=value)

    def setPredictionCol(self, value: str) -> "RandomCutForestModel":
        return self._set(predictionCol=value)

    def setAttributionCol(self, value: str) -> "RandomCutForestModel":
        return self._set(attributionCol=value)

    def setThreshold(self, value: float) -> "RandomCutForestModel":
        """Override the fitted threshold (e.g. from a labelled validation set)."""
        self._threshold = float(value)
        return self

    def score(self, X: Any) -> np.ndarray:
        """Score a numpy matrix without Spark (same numbers as ``transform``)."""
        return self.forest.score(X)

    def _transform(self, dataset: Any) -> Any:
        from pyspark.sql import functions as F
        from pyspark.sql.functions import pandas_udf
        from pyspark.sql.types import ArrayType, DoubleType, StructField, StructType

        forest = self.forest
        feats = _features_as_array(dataset, self.getFeaturesCol())
        bc = dataset.sparkSession.sparkContext.broadcast(forest.to_arrays())
        score_col = self.getScoreCol()
        attr_col = self.getAttributionCol()
        pred_col = self.getPredictionCol()

        # One double column per feature: Arrow hands each to the UDF as a contiguous float64
        # array (nulls as NaN), much cheaper than a column of arrays. Arrays of the wrong
        # length become null first, so they score null as before.
        width = forest.num_features
        arr = F.when(F.size(feats) == width, feats)
        feat_cols = [arr.getItem(j) for j in range(width)]

        if attr_col:
            out_type = StructType([StructField("score", DoubleType()),
                                   StructField("attribution", ArrayType(DoubleType()))])

            @pandas_udf(out_type)  # type: ignore[call-overload]
            def _rcf_score_attr(*cols):  # pragma: no cover - runs on executors
                return _score_columns(bc.value, cols, True)

            tmp = "__rcf_" + self.uid
            out_df = (dataset.withColumn(tmp, _rcf_score_attr(*feat_cols))
                      .withColumn(score_col, F.col(tmp)["score"])
                      .withColumn(attr_col, F.col(tmp)["attribution"])
                      .drop(tmp))
        else:
            @pandas_udf(DoubleType())  # type: ignore[call-overload]
            def _rcf_score(*cols):  # pragma: no cover - runs on executors
                return _score_columns(bc.value, cols, False)

            out_df = dataset.withColumn(score_col, _rcf_score(*feat_cols))
        if pred_col and self._threshold is not None:
            out_df = out_df.withColumn(pred_col, F.col(score_col) > F.lit(self._threshold))
        return out_df

    def copy(self, extra: Optional[Dict[Param, Any]] = None) -> "RandomCutForestModel":
        that = super().copy(extra)
        that._forest = self._forest
        that._threshold = self._threshold
        return that

    def write(self) -> MLWriter:
        return _RandomCutForestModelWriter(self)

    @classmethod
    def read(cls) -> MLReader:
        return _RandomCutForestModelReader(cls)


# --------------------------------------------------------------------------------------------
# Helpers for the Spark side
# --------------------------------------------------------------------------------------------
def _threshold(scores: np.ndarray, method: str, sigmas: float, quantile: float) -> float:
    scores = scores[np.isfinite(scores)]
    if method == "quantile":
        return float(np.quantile(scores, quantile))
    return float(scores.mean() + sigmas * scores.std())


def _features_as_array(dataset: Any, col_name: str) -> Any:
    """The features column as array<double>, whether it holds a Vector or numbers."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, DoubleType, NumericType

    if col_name not in dataset.columns:
        raise ValueError(f"featuresCol {col_name!r} is not a column of the input "
                         f"(columns: {dataset.columns})")
    dtype = dataset.schema[col_name].dataType
    if isinstance(dtype, VectorUDT):
        return vector_to_array(F.col(col_name), "float64")
    if isinstance(dtype, ArrayType) and isinstance(dtype.elementType, NumericType):
        return F.col(col_name).cast(ArrayType(DoubleType()))
    raise TypeError(f"featuresCol {col_name!r} must hold a Vector or an array of numbers, "
                    f"not {dtype.simpleString()}")


def _collect_matrix(df: Any, col_name: str) -> np.ndarray:
    rows = [r[0] for r in df.select(col_name).collect()]
    if not rows:
        return np.zeros((0, 0))
    width = len(rows[0])
    if any(len(r) != width for r in rows):
        raise ValueError("feature arrays of different lengths in the training data")
    return np.array(rows, dtype=np.float64).reshape(len(rows), width)


def _series_to_matrix(col: Any, width: int) -> Tuple[np.ndarray, np.ndarray]:
    """(matrix, valid mask) from a pandas Series of arrays (None for null rows).

    Arrow hands an ``array<double>`` column to the UDF as an object Series of float64 numpy
    arrays; the valid ones are stacked into one contiguous matrix in a single ``np.stack``
    (no per-row copy into the matrix). Rows of the wrong length count as null.
    """
    n = len(col)
    X = np.full((n, width), np.nan)
    if n == 0:
        return X, np.zeros(0, dtype=bool)
    values = col.to_numpy(dtype=object)
    valid = np.fromiter((v is not None and len(v) == width for v in values), dtype=bool,
                        count=n)
    if valid.all():
        X = np.stack(values).astype(np.float64, copy=False).reshape(n, width)
    elif valid.any():
        X[valid] = np.stack(values[valid])
    return X, valid


_FOREST_CACHE: Dict[int, Forest] = {}


def _forest_from_arrays_cached(arrays: Dict[str, np.ndarray]) -> Forest:
    key = id(arrays)
    forest = _FOREST_CACHE.get(key)
    if forest is None:
        _FOREST_CACHE.clear()
        forest = _FOREST_CACHE[key] = Forest.from_arrays(arrays)
    return forest


def _score_columns(arrays: Dict[str, np.ndarray], cols: Sequence[Any], want_attr: bool) -> Any:
    """Score a batch given as one pandas Series of doubles per feature (null = NaN)."""
    forest = _forest_from_arrays_cached(arrays)
    X = np.empty((len(cols[0]), len(cols)))
    for j, c in enumerate(cols):
        X[:, j] = c.to_numpy(dtype=np.float64, na_value=np.nan)
    return _score_matrix(forest, X, want_attr)


def _score_series(arrays: Dict[str, np.ndarray], col: Any, want_attr: bool) -> Any:
    """Score a batch given as one pandas Series of arrays (None for null rows)."""
    forest = _forest_from_arrays_cached(arrays)
    X, _ = _series_to_matrix(col, forest.num_features)
    return _score_matrix(forest, X, want_attr)


def _score_matrix(forest: Forest, X: np.ndarray, want_attr: bool) -> Any:
    import pandas as pd

    if want_attr:
        scores, attr = forest.score_and_attribution(X)
        attr_list = list(attr)
        for i in np.flatnonzero(np.isnan(scores)):
            attr_list[i] = None
        return pd.DataFrame({"score": pd.Series(scores).where(~np.isnan(scores), None),
                             "attribution": attr_list})
    scores = forest.score(X)
    return pd.Series(scores).where(~np.isnan(scores), None)


# --------------------------------------------------------------------------------------------
# Persistence
# --------------------------------------------------------------------------------------------
def _join(path: str, name: str) -> str:
    return path.rstrip("/") + "/" + name


def _write_bytes(sc: Any, path: str, data: bytes) -> None:
    """Write a file through Hadoop's FileSystem (local paths, hdfs://, s3a:// alike)."""
    jvm = sc._jvm
    jpath = jvm.org.apache.hadoop.fs.Path(path)
    fs = jpath.getFileSystem(sc._jsc.hadoopConfiguration())
    out = fs.create(jpath, True)
    try:
        out.write(bytearray(data))
    finally:
        out.close()


def _read_bytes(sc: Any, path: str) -> bytes:
    jvm = sc._jvm
    jpath = jvm.org.apache.hadoop.fs.Path(path)
    fs = jpath.getFileSystem(sc._jsc.hadoopConfiguration())
    stream = fs.open(jpath)
    buf = jvm.java.io.ByteArrayOutputStream()
    jvm.org.apache.hadoop.io.IOUtils.copyBytes(stream, buf, 1 << 16, True)
    return bytes(buf.toByteArray())


class _RandomCutForestModelWriter(MLWriter):
    def __init__(self, instance: RandomCutForestModel) -> None:
        super().__init__()
        self.instance = instance

    def saveImpl(self, path: str) -> None:
        extra = {"threshold": self.instance.threshold, "forestFile": FOREST_FILE,
                 "forestFormatVersion": _FORMAT_VERSION}
        DefaultParamsWriter.saveMetadata(self.instance, path, self.sc, extraMetadata=extra)
        _write_bytes(self.sc, _join(path, FOREST_FILE), self.instance.forest.to_bytes())


class _RandomCutForestModelReader(MLReader):
    def __init__(self, cls: type) -> None:
        super().__init__()
        self.cls = cls

    def load(self, path: str) -> RandomCutForestModel:
        metadata = DefaultParamsReader.loadMetadata(path, self.sc)
        forest = Forest.from_bytes(
            _read_bytes(self.sc, _join(path, metadata.get("forestFile", FOREST_FILE))))
        model = self.cls(forest=forest, threshold=metadata.get("threshold"))
        model._resetUid(metadata["uid"])
        DefaultParamsReader.getAndSetParams(model, metadata)
        return model


def _warn_without_numba() -> None:
    if not HAVE_NUMBA:  # pragma: no cover
        warnings.warn("numba is not installed: Random Cut Forest scoring runs as plain Python "
                      "and is about 100 times slower", RuntimeWarning, stacklevel=2)


_warn_without_numba()
