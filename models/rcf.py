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
(no per-row Python work); ``featuresCol`` is still the one public input. The scoring paths
(scoring/) do not go through ``transform``: they call the :class:`Forest` kernels on the columns
they read (``forest_broadcast`` ships the forest to the Python workers).

Precision: coordinates are float32, as in the library, which stores points and bounding boxes
as ``float[]`` (and the per-tree arithmetic is float32 here, where the library uses double).
Training points are rounded to float32 before the trees are built (``Forest.from_samples``),
so a tree's boxes and leaves hold exactly float32 values: a query is rounded the same way
(after clipping to +-3e38 / (2 (d + 1)), so float32 sums of gaps and sides stay finite), a
training point then still equals its leaf point and lies inside every box above it, and rows
closer together than float32 spacing are one point, as in the library. Cuts are rounded down
to float32, which leaves ``x <= cut`` unchanged for float32 ``x``; forests saved by versions
that built trees on float64 points load unchanged and are rounded at load time (boxes to
nearest, cuts kept between the rounded points of their two sides). The gaps, ``p`` and the
per-tree score ``s`` are float32 (relative error per operation <= 6e-8; the tests hold the
scores within relative 1e-6 of a float64 row-by-row walk on the float32 coordinates, and on
the benchmark data the largest difference is 5e-8); the trees' scores are summed in float64.
float32 halves the bytes the scoring loops read and doubles the values per vector
instruction, which makes the scoring loops faster.
A query whose float64 value lies within float32 rounding of a cut may take the other branch
than a float64 walk would: against a float64 walk of the same trees on the unrounded rows, 2
of the benchmark's 100,000 rows differ by more than 1e-5 relative (at most 0.23%), the rest
by < 2.4e-7 (against the float64 kernel and float64-built trees this replaced: 7 rows, at
most 0.32%).

Scoring cost: rows are scored in blocks (``_block_rows``: up to 16,384 rows, fewer for wider
rows so the block's float32 features stay within 3/4 of the L2 cache), tree by tree. A block is
first routed down the tree node by node, each node splitting its rows between its two
children, so that every node's rows end up contiguous (sorted by leaf). The upward pass then
runs node by node, deepest first. A leaf compares its rows with its point row by row (the
first feature almost always differs), cheaper than per-feature loops over its few rows. An
internal node updates its run of rows one feature at a time, loops that LLVM vectorises (16
float32 lanes with AVX-512): ``s = s + p * (u - s)``, ``p`` from the query's gaps to the
node's box and the box's precomputed sum of sides. A row inside a node's box gets ``p = 0``
there and at every ancestor (boxes nest), which leaves ``s`` unchanged exactly, so visiting
every ancestor gives bit for bit the scores of a walk that stops at the first containing box;
only near the root (depth < ``_SPARSE_DEPTH``), where most rows are already inside, are
nodes visited just by the rows still outside. The attribution pass is the same with a
per-feature share carried next to ``s``, with the same float32 operations in the same order
for ``s``. ``score`` runs the score-only kernel; ``score_and_attribution`` returns bit for
bit the same scores, and with ``min_score`` runs the attribution pass only on the rows scoring
above it (``attributionScope="flagged"`` on the Spark model).

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

from runtime import fs
from features.jit import HAVE_NUMBA, _U, njit as _njit, numba  # noqa: F401  (numba: tests patch it)


__all__ = [
    "Forest",
    "robust_scaling",
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


# Rows routed through a tree together (see _block_rows): the longer the block, the longer each
# node's run of rows, so the fixed cost of a node's loops is spread over more rows.
_BLOCK_MIN = 4096
_BLOCK_MAX = 16384
_F32_CLIP = 3.0e38  # inputs are clipped to +-_F32_CLIP / (2 (d + 1)) so float32 sums stay finite
_SPARSE_DEPTH = 2  # nodes shallower than this are updated only for rows still outside a box


@_njit
def _route_block(XT, m, root, nnodes, cut_dim, cut_val, left, depth, na, nb, buf0, buf1, order):
    """Partition the block's rows (``XT[j, i]``: feature ``j`` of row ``i < m``) down one tree.

    Nodes are visited by index, so parents before children. On return ``order[na[k]:nb[k]]``
    are the rows that pass through node ``root + k``: a node's run of rows is split into two
    runs for its children, so every subtree's rows stay contiguous and ``order`` ends up
    sorted by leaf. A node reads its rows from ``buf0`` or ``buf1`` (by depth parity) and
    writes the split to the other; left-going rows fill the run from the front and right-going
    ones from the back, branch free (each row is stored at both ends; the end whose pointer
    does not move is overwritten later).
    """
    for k in range(nnodes):
        na[k] = 0
        nb[k] = 0
    for i in range(m):
        buf0[i] = i
    nb[0] = m
    for k in range(nnodes):
        a = na[k]
        b = nb[k]
        if b <= a:
            continue
        v = root + k
        odd = (depth[v] & 1) == 1
        src = buf1 if odd else buf0
        if cut_dim[v] < 0:
            for i in range(a, b):
                order[i] = src[i]
            continue
        dst = buf0 if odd else buf1
        col = XT[_U(cut_dim[v])]
        cut = cut_val[v]
        lp = a
        rp = b  # one past the next free slot from the back
        for i in range(a, b):
            row = src[i]
            right = _U(col[_U(row)] > cut)  # x <= cut goes left, as in the Java library
            dst[lp] = row
            dst[rp - _U(1)] = row
            lp += _U(1) - right
            rp -= right
        lc = _U(left[v]) - root  # the right child is lc + 1
        na[lc] = a
        nb[lc] = lp
        na[lc + _U(1)] = lp
        nb[lc + _U(1)] = b


@_njit
def _gather_block(XT, m, order, xs):
    """``xs[j, i] = XT[j, order[i]]``: the block's features with its rows in leaf order."""
    for j in range(_U(XT.shape[0])):
        col = XT[j]
        out = xs[j]
        for i in range(m):
            out[i] = col[_U(order[i])]


@_njit
def _score_kernel(X, roots, ends, tree_mass, cut_dim, cut_val, left, mass, box_min, box_max,
                  side_sum, unseen, depth, block, sparse_depth):
    """Mean over trees of the normalised AnomalyScoreVisitor score.

    ``cut_val``, ``box_min``, ``box_max``, ``side_sum`` and ``unseen`` are the float32 copies
    (``_float32_arrays``); the block's rows are clipped and rounded to float32 as they are
    copied in, and the per-tree score is computed in float32 (see the module docstring).
    Per block of rows and tree: ``_route_block`` sorts the rows by leaf, then the upward pass
    runs node by node, deepest first: a leaf sets ``s`` row by row; an internal node updates
    the contiguous run of its rows with ``s = s + p * (u - s)`` (vectorisable: one feature
    at a time over the run). A row inside a
    node's box gets ``p = 0`` there and, boxes being nested, at every ancestor, which leaves
    ``s`` unchanged exactly; so visiting all ancestors gives the same bits as stopping at the
    first containing box. Nodes shallower than ``sparse_depth`` are visited only by the rows
    still outside their box at that depth (few), through a list of their positions.
    """
    n, d = X.shape
    ud = _U(d)
    n_trees = roots.shape[0]
    scores = np.zeros(n)
    inv_ln2 = 1.0 / math.log(2.0)
    block = max(1, min(block, n))
    XT = np.empty((d, block), np.float32)  # the block's rows, one row per feature
    width = 1
    for t in range(n_trees):
        width = max(width, ends[t] - roots[t])
    na = np.empty(width, np.uint64)
    nb = np.empty(width, np.uint64)
    buf0 = np.empty(block, np.uint32)
    buf1 = np.empty(block, np.uint32)
    order = np.empty(block, np.uint32)
    xs = np.empty((d, block), np.float32)
    s = np.empty(block, np.float32)
    g = np.empty(block, np.float32)
    zero = np.float32(0.0)
    big = np.float32(_F32_CLIP / (2.0 * (d + 1)))
    outside = np.empty(block, np.uint8)
    pos = np.empty(block + 1, np.uint32)
    rows = np.empty(block + 1, np.uint32)
    last = ud - _U(1)
    for r0 in range(0, n, block):
        m = _U(min(block, n - r0))
        ur0 = _U(r0)
        for i in range(m):
            for j in range(ud):
                XT[j, i] = np.float32(min(max(X[ur0 + i, j], -big), big))
        for t in range(n_trees):
            root = _U(roots[t])
            nnodes = _U(ends[t]) - root
            big_m = tree_mass[t]
            norm = math.log(big_m + 1.0) * inv_ln2
            _route_block(XT, m, root, nnodes, cut_dim, cut_val, left, depth, na, nb, buf0, buf1,
                         order)
            _gather_block(XT, m, order, xs)
            for i in range(m):
                outside[i] = 1
            for k0 in range(nnodes):  # deepest first: children have larger indices
                k = nnodes - _U(1) - k0
                a = na[k]
                b = nb[k]
                if b <= a:
                    continue
                v = root + k
                lo = box_min[v]
                uv = unseen[v]
                if cut_dim[v] < 0:
                    # a leaf: scoreUnseen(depth), or damp * scoreSeen for rows equal to its point
                    mm = mass[v]
                    seen = np.float32((1.0 - mm / (2.0 * big_m))
                                      / (depth[v] + math.log(mm + 1.0) * inv_ln2))
                    # row by row, stopping at the first differing feature (usually the
                    # first): cheaper than per-feature passes over a leaf's few rows
                    for i in range(a, b):
                        val = seen
                        for j in range(ud):
                            if xs[j, i] != lo[j]:
                                val = uv
                                break
                        s[i] = val
                    continue
                if depth[v] < sparse_depth:
                    continue
                hi = box_max[v]
                sv = side_sum[v]
                # g = sum over features of the gap max(x - hi, 0) + max(lo - x, 0), added in
                # feature order; the last feature's pass also applies the update
                if last > _U(0):
                    col = xs[0]
                    lj = lo[0]
                    hj = hi[0]
                    for i in range(a, b):
                        x = col[i]
                        g[i] = max(max(x - hj, lj - x), zero)
                    for j in range(_U(1), last):
                        col = xs[j]
                        lj = lo[j]
                        hj = hi[j]
                        for i in range(a, b):
                            x = col[i]
                            g[i] += max(max(x - hj, lj - x), zero)
                else:
                    for i in range(a, b):
                        g[i] = zero
                col = xs[last]
                lj = lo[last]
                hj = hi[last]
                for i in range(a, b):
                    x = col[i]
                    gg = g[i] + max(max(x - hj, lj - x), zero)
                    g[i] = gg
                    p = gg / (sv + gg)
                    s[i] = s[i] + p * (uv - s[i])
                if depth[v] == sparse_depth:
                    for i in range(a, b):
                        outside[i] = g[i] > zero
            # the top of the tree: only rows not yet inside a box (pos maps a range onto the list)
            c = _U(0)
            for i in range(m):
                pos[i] = c
                rows[c] = i
                c += _U(outside[i])
            pos[m] = c
            for k0 in range(nnodes):
                k = nnodes - _U(1) - k0
                v = root + k
                if cut_dim[v] < 0 or depth[v] >= sparse_depth:
                    continue
                lo = box_min[v]
                hi = box_max[v]
                sv = side_sum[v]
                uv = unseen[v]
                for q in range(_U(pos[na[k]]), _U(pos[nb[k]])):
                    i = _U(rows[q])
                    gg = zero
                    for j in range(ud):
                        x = xs[j, i]
                        gg += max(max(x - hi[j], lo[j] - x), zero)
                    p = gg / (sv + gg)
                    s[i] = s[i] + p * (uv - s[i])
            for i in range(m):
                scores[ur0 + _U(order[i])] += s[i] * norm
    for r in range(n):
        scores[r] /= n_trees
    return scores


@_njit
def _attr_kernel(X, roots, ends, tree_mass, cut_dim, cut_val, left, mass, box_min, box_max,
                 side_sum, unseen, depth, block):
    """Scores (bit for bit those of ``_score_kernel``) and the DiVector attribution.

    Same float32 inputs and float32 operations for ``s`` (gaps added in feature order, then
    ``p = g / (side_sum + g)``, ``s = s + p * (u - s)``) as ``_score_kernel``, hence the same
    bits; the shares ``a[j]`` are float32 too. Same node-by-node pass as ``_score_kernel``
    over every node; each row carries ``a[j]`` next to ``s``:
    ``a[j] = gap_j / (side_sum + gap) * u + (1 - p) * a[j]`` at every ancestor (``a``
    unchanged where the row is inside the box). At the leaf ``s`` is split in proportion to
    the distance to the leaf point per feature (evenly for a seen point).
    """
    n, d = X.shape
    ud = _U(d)
    n_trees = roots.shape[0]
    scores = np.zeros(n)
    attr = np.zeros((n, d))
    inv_ln2 = 1.0 / math.log(2.0)
    block = max(1, min(block, n))
    XT = np.empty((d, block), np.float32)  # the block's rows, one row per feature
    width = 1
    for t in range(n_trees):
        width = max(width, ends[t] - roots[t])
    na = np.empty(width, np.uint64)
    nb = np.empty(width, np.uint64)
    buf0 = np.empty(block, np.uint32)
    buf1 = np.empty(block, np.uint32)
    order = np.empty(block, np.uint32)
    xs = np.empty((d, block), np.float32)
    share = np.empty((d, block), np.float32)
    s = np.empty(block, np.float32)
    g = np.empty(block, np.float32)
    q = np.empty(block, np.float32)
    zero = np.float32(0.0)
    one = np.float32(1.0)
    fd = np.float32(d)
    big = np.float32(_F32_CLIP / (2.0 * (d + 1)))
    for r0 in range(0, n, block):
        m = _U(min(block, n - r0))
        ur0 = _U(r0)
        for i in range(m):
            for j in range(ud):
                XT[j, i] = np.float32(min(max(X[ur0 + i, j], -big), big))
        for t in range(n_trees):
            root = _U(roots[t])
            nnodes = _U(ends[t]) - root
            big_m = tree_mass[t]
            norm = math.log(big_m + 1.0) * inv_ln2
            _route_block(XT, m, root, nnodes, cut_dim, cut_val, left, depth, na, nb, buf0, buf1,
                         order)
            _gather_block(XT, m, order, xs)
            for k0 in range(nnodes):
                k = nnodes - _U(1) - k0
                a = na[k]
                b = nb[k]
                if b <= a:
                    continue
                v = root + k
                lo = box_min[v]
                uv = unseen[v]
                if cut_dim[v] < 0:
                    mm = mass[v]
                    seen = np.float32((1.0 - mm / (2.0 * big_m))
                                      / (depth[v] + math.log(mm + 1.0) * inv_ln2))
                    for i in range(a, b):  # g = L1 distance to the leaf point
                        g[i] = zero
                    for j in range(ud):
                        col = xs[j]
                        pj = lo[j]
                        for i in range(a, b):
                            g[i] += abs(col[i] - pj)
                    for i in range(a, b):
                        s[i] = seen if g[i] == zero else uv
                    for j in range(ud):
                        col = xs[j]
                        pj = lo[j]
                        aj = share[j]
                        for i in range(a, b):
                            dist = g[i]
                            si = s[i]
                            aj[i] = si / fd if dist == zero else si * abs(col[i] - pj) / dist
                    continue
                hi = box_max[v]
                sv = side_sum[v]
                for i in range(a, b):
                    g[i] = zero
                for j in range(ud):
                    col = xs[j]
                    lj = lo[j]
                    hj = hi[j]
                    for i in range(a, b):
                        x = col[i]
                        g[i] += max(max(x - hj, lj - x), zero)
                for i in range(a, b):
                    sum_new = sv + g[i]
                    p = g[i] / sum_new
                    s[i] = s[i] + p * (uv - s[i])
                    g[i] = sum_new
                    q[i] = one - p
                for j in range(ud):
                    col = xs[j]
                    lj = lo[j]
                    hj = hi[j]
                    aj = share[j]
                    for i in range(a, b):
                        x = col[i]
                        aj[i] = max(max(x - hj, lj - x), zero) / g[i] * uv + q[i] * aj[i]
            for i in range(m):
                r = ur0 + _U(order[i])
                scores[r] += s[i] * norm
                for j in range(ud):
                    attr[r, j] += share[j, i] * norm
    for r in range(n):
        scores[r] /= n_trees
        for j in range(d):
            attr[r, j] /= n_trees
    return scores, attr


@_njit
def _node_depth(cut_dim, left):
    """Depth of every node (roots 0), in one forward pass: parents have smaller indices."""
    depth = np.zeros(cut_dim.shape[0], np.int64)
    for v in range(cut_dim.shape[0]):
        if cut_dim[v] >= 0:
            depth[left[v]] = depth[v] + 1
            depth[left[v] + 1] = depth[v] + 1
    return depth


def _l2_bytes() -> int:
    """The per-core L2 cache size in bytes as Linux reports it (1 MiB where it cannot be read)."""
    try:
        with open("/sys/devices/system/cpu/cpu0/cache/index2/size") as fh:
            text = fh.read().strip().upper()
        scale = {"K": 1024, "M": 1024 * 1024}.get(text[-1:], 1)
        return int(text.rstrip("KM")) * scale
    except (OSError, ValueError):
        return 1024 * 1024


# float32 block features (block and leaf-ordered copy, 8 bytes a value) fit in 3/4 of the L2 cache
_BLOCK_BYTES = _l2_bytes() * 3 // 4


def _block_rows(d: int) -> int:
    """Rows per block: the largest power of two in [_BLOCK_MIN, _BLOCK_MAX] whose two float32
    copies of the block's features (8 bytes per value) fit in _BLOCK_BYTES, three quarters of
    the per-core L2 cache (the rest holds a tree's nodes and the row buffers): with a 1 MiB L2,
    16,384 rows up to 6 features and 8,192 up to 12; with 2 MiB, 16,384 up to 12 features.

    Measured on this project's machines (2 MiB L2, 100 trees x 256, two runs each): 9 features,
    16,384 rows scored 9% faster than 8,192 (what a fixed 768 KiB bound gave); 14 features,
    8,192 rows 16% faster than 4,096 and within 2% of 16,384; 21 features, 8,192 rows 10%
    faster than 4,096 and 4% faster than 16,384 (beyond the cache). Earlier, on 6 features,
    16,384 rows scored 14% faster than 4,096 and 5% faster than 8,192.
    """
    rows = _BLOCK_MAX
    while rows > _BLOCK_MIN and 8 * max(d, 1) * rows > _BLOCK_BYTES:
        rows //= 2
    return rows


def _round_f32(X: np.ndarray) -> np.ndarray:
    """``X`` (float64) rounded to the float32 values the scoring kernels read: clipped to
    +-_F32_CLIP / (2 (d + 1)) (so sums of gaps and sides stay finite in float32), then
    rounded to nearest. Non-finite values pass through unchanged.
    """
    d = X.shape[1] if X.ndim == 2 else 1
    big = _F32_CLIP / (2.0 * (d + 1))
    with np.errstate(invalid="ignore"):
        out = np.clip(X, -big, big).astype(np.float32).astype(np.float64)
    bad = ~np.isfinite(X)
    if bad.any():
        out[bad] = X[bad]
    return out


def _float32_arrays(cut_dim: np.ndarray, cut_val: np.ndarray, left: np.ndarray,
                    box_min: np.ndarray, box_max: np.ndarray, unseen: np.ndarray
                    ) -> Tuple[np.ndarray, ...]:
    """float32 copies of the node arrays the scoring kernels read (cuts, boxes, sums of sides).

    Coordinates are rounded to float32 the way the scored rows are (clipped, then nearest), so
    rounding, being monotone, keeps every box tight on its rounded points and nested in its
    parent's. A cut must still separate the rounded points of its two children: it is rounded
    down (``x <= c`` is then unchanged for float32 ``x``), then kept within [largest left
    point, below the smallest right point] when rounding has not merged the two.
    """
    d = box_min.shape[1] if box_min.ndim == 2 else 1
    big = _F32_CLIP / (2.0 * (d + 1))
    bmin = np.clip(box_min, -big, big).astype(np.float32)
    bmax = np.clip(box_max, -big, big).astype(np.float32)
    cut64 = np.clip(cut_val, -big, big)
    cut = cut64.astype(np.float32)
    above = cut.astype(np.float64) > cut64
    cut[above] = np.nextafter(cut[above], np.float32(-np.inf))
    internal = np.flatnonzero(cut_dim >= 0)
    if internal.size:
        dim = cut_dim[internal]
        lmax = bmax[left[internal], dim]  # largest (rounded) point going left
        rmin = bmin[left[internal] + 1, dim]  # smallest going right
        c = np.maximum(cut[internal], lmax)
        sep = lmax < rmin
        c[sep] = np.minimum(c[sep], np.nextafter(rmin[sep], np.float32(-np.inf)))
        cut[internal] = c
    side = (bmax.astype(np.float64) - bmin.astype(np.float64)).sum(axis=1).astype(np.float32)
    return (cut, np.ascontiguousarray(bmin), np.ascontiguousarray(bmax), side,
            unseen.astype(np.float32))


# --------------------------------------------------------------------------------------------
# Pure numpy API
# --------------------------------------------------------------------------------------------
_ARRAY_FIELDS = ("roots", "tree_mass", "cut_dim", "cut_val", "left", "right", "mass",
                 "box_min", "box_max")


def robust_scaling(X: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(center, scale) per column of ``X``: the median and the interquartile range (the standard
    deviation where the IQR is 0, 1 where that is 0 too).

    Random cuts pick a dimension in proportion to its range, so on raw features one wide column
    (seconds since the last transaction, bytes) takes nearly every cut; on robust-scaled features
    the cuts spread over the columns by how spread out their typical values are. Measured:
    transactions (Handbook data, 21 features) AUC 0.590 -> 0.887; telemetry (14 features)
    AUC 0.727 -> 0.785 on the 10M bench draw.
    """
    X = _as_matrix(X)
    center = np.median(X, axis=0)
    q75, q25 = np.percentile(X, [75, 25], axis=0)
    iqr = q75 - q25
    std = X.std(axis=0)
    scale = np.where(iqr > 0, iqr, np.where(std > 0, std, 1.0))
    return center, scale


class Forest:
    """A fitted random cut forest held in flat node arrays (usable without Spark).

    Node ``i`` (of all trees together): ``cut_dim[i]`` (-1 for a leaf), ``cut_val[i]``,
    ``left[i]``/``right[i]`` (absolute node indices, -1 for a leaf), ``mass[i]`` (points under
    the node), ``box_min[i]``/``box_max[i]`` (bounding box; a leaf's box is its point).
    ``roots[t]`` and ``tree_mass[t]`` describe tree ``t``.
    """

    def __init__(self, roots: np.ndarray, tree_mass: np.ndarray, cut_dim: np.ndarray,
                 cut_val: np.ndarray, left: np.ndarray, right: np.ndarray, mass: np.ndarray,
                 box_min: np.ndarray, box_max: np.ndarray, max_depth: int,
                 center: Optional[np.ndarray] = None, scale: Optional[np.ndarray] = None) -> None:
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
        # feature scaling (None: the trees were built on the raw values): x -> (x - center) / scale
        if (center is None) != (scale is None):
            raise ValueError("give both center and scale, or neither")
        self.center = None if center is None else np.ascontiguousarray(center, dtype=np.float64)
        self.scale = None if scale is None else np.ascontiguousarray(scale, dtype=np.float64)
        if self.center is not None and not (self.center.shape == self.scale.shape == (self.box_min.shape[1],)
                                            and np.all(np.isfinite(self.center)) and np.all(self.scale > 0)):
            raise ValueError("center and scale must be finite, one per feature, with scale > 0")
        # The kernels walk each tree's nodes by index: tree t owns nodes roots[t] .. ends[t],
        # children come after their parent and are adjacent (as _build_tree lays them out).
        n_nodes = self.cut_dim.shape[0]
        internal = np.flatnonzero(self.cut_dim >= 0)
        if not np.array_equal(self.right[internal], self.left[internal] + 1):
            raise ValueError("forest arrays are inconsistent: children must be adjacent")
        if self.roots.size and (self.roots[0] != 0 or np.any(np.diff(self.roots) <= 0)
                                or self.roots[-1] >= n_nodes):
            raise ValueError("forest arrays are inconsistent: roots must start each tree's nodes")
        # derived scoring arrays (not saved): tree ends, node depths, scoreUnseen per node, and
        # the float32 copies the kernels read (cuts, boxes and the sum of each box's sides)
        self._ends = np.append(self.roots[1:], n_nodes).astype(np.int64)
        tree_end = self._ends[np.searchsorted(self.roots, internal, side="right") - 1]
        if np.any(self.left[internal] <= internal) or np.any(self.right[internal] >= tree_end):
            raise ValueError("forest arrays are inconsistent: children must follow their parent "
                             "within its tree")
        self._depth = _node_depth(self.cut_dim, self.left)
        self._unseen = 1.0 / (self._depth + 1.0)
        self._f32 = _float32_arrays(self.cut_dim, self.cut_val, self.left, self.box_min,
                                    self.box_max, self._unseen)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def fit(cls, X: Any, num_trees: int = 100, samples: int = 256,
            seed: Optional[int] = None, scaling: str = "none") -> "Forest":
        """Build ``num_trees`` trees, each on ``samples`` rows of ``X`` drawn without replacement.

        When ``X`` has at least ``num_trees * samples`` rows the trees get disjoint samples;
        with fewer rows each tree draws its own sample (all rows if fewer than ``samples``).
        Rows with a non-finite value are ignored. Deterministic for a given ``seed``.
        ``scaling="robust"``: every feature is centred on its median in ``X`` and divided by its
        interquartile range (its standard deviation where the IQR is 0, else 1) before the trees
        are built, and every row scored later is scaled the same way (see :func:`robust_scaling`).
        """
        X = _as_matrix(X)
        X = X[np.isfinite(X).all(axis=1)]
        if X.shape[0] == 0:
            raise ValueError("cannot fit a random cut forest on no (finite) rows")
        if scaling not in ("none", "robust"):
            raise ValueError(f"scaling must be 'none' or 'robust', got {scaling!r}")
        center = scale = None
        if scaling == "robust":
            center, scale = robust_scaling(X)
            X = (X - center) / scale
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
        forest = cls.from_samples([X[rows] for rows in tree_rows], rng=rng)
        if center is not None:
            forest = cls(*(getattr(forest, name) for name in _ARRAY_FIELDS), max_depth=forest.max_depth,
                         center=center, scale=scale)
        return forest

    @classmethod
    def from_samples(cls, tree_samples: Sequence[np.ndarray],
                     rng: Optional[np.random.Generator] = None,
                     seed: Optional[int] = None) -> "Forest":
        """Build one tree per given sample matrix (all with the same number of columns).

        The points are first rounded to float32 (:func:`_round_f32`), as the library stores
        them, so that scoring, which reads float32 coordinates, sees exactly the tree's points.
        """
        if rng is None:
            rng = np.random.default_rng(seed)
        tree_samples = [_round_f32(_as_matrix(s)) for s in tree_samples]
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
        X, ok = self._finite_rows(X)
        scores = np.full(X.shape[0], np.nan)
        if ok.any():
            scores[ok] = _score_kernel(*self._kernel_args(X, ok), _SPARSE_DEPTH)
        return scores

    def attribution(self, X: Any) -> np.ndarray:
        """Per-feature share of the score, shape (rows, features); rows sum to the score."""
        return self.score_and_attribution(X)[1]

    def score_and_attribution(self, X: Any, min_score: Optional[float] = None
                              ) -> Tuple[np.ndarray, np.ndarray]:
        """Scores and per-feature attributions (rows, features); NaN rows where not computed.

        Without ``min_score`` both come from one pass for every finite row. With
        ``min_score``, every row is scored by the score-only pass and only rows scoring above
        ``min_score`` go through the (costlier) attribution pass; the others get a NaN
        attribution row. The scores are bit for bit those of :meth:`score` either way.
        """
        X, ok = self._finite_rows(X)
        n = X.shape[0]
        scores = np.full(n, np.nan)
        attr = np.full((n, self.num_features), np.nan)
        if min_score is None:
            if ok.any():
                scores[ok], attr[ok] = _attr_kernel(*self._kernel_args(X, ok))
            return scores, attr
        if ok.any():
            scores[ok] = _score_kernel(*self._kernel_args(X, ok), _SPARSE_DEPTH)
        flagged = scores > float(min_score)  # NaN (non-finite rows) compares False
        if flagged.any():
            attr[flagged] = _attr_kernel(*self._kernel_args(X, flagged))[1]
        return scores, attr

    def _finite_rows(self, X: Any) -> Tuple[np.ndarray, np.ndarray]:
        X = _as_matrix(X)
        if X.shape[1] != self.num_features:
            raise ValueError(
                f"forest was fitted on {self.num_features} features, got {X.shape[1]}")
        if self.center is not None:
            X = (X - self.center) / self.scale
        return X, np.isfinite(X).all(axis=1)

    def _kernel_args(self, X: np.ndarray, rows: np.ndarray) -> Tuple[Any, ...]:
        Xr = X if rows.all() else X[rows]
        cut32, box_min32, box_max32, side32, unseen32 = self._f32
        return (np.ascontiguousarray(Xr), self.roots, self._ends, self.tree_mass, self.cut_dim,
                cut32, self.left, self.mass, box_min32, box_max32, side32,
                unseen32, self._depth, _block_rows(self.num_features))

    # ---- persistence --------------------------------------------------------------------------
    def to_arrays(self) -> Dict[str, np.ndarray]:
        out = {name: getattr(self, name) for name in _ARRAY_FIELDS}
        out["max_depth"] = np.array(self.max_depth, np.int64)
        out["format_version"] = np.array(_FORMAT_VERSION, np.int64)
        if self.center is not None:       # optional: forests saved before scaling existed load as unscaled
            out["center"], out["scale"] = self.center, self.scale
        return out

    @classmethod
    def from_arrays(cls, arrays: Dict[str, np.ndarray]) -> "Forest":
        version = int(arrays.get("format_version", _FORMAT_VERSION))
        if version != _FORMAT_VERSION:
            raise ValueError(f"unsupported forest format version {version}")
        return cls(*(arrays[name] for name in _ARRAY_FIELDS), max_depth=int(arrays["max_depth"]),
                   center=arrays.get("center"), scale=arrays.get("scale"))

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
    attributionScope: Param[str] = Param(
        Params._dummy(), "attributionScope",
        "rows that get an attribution: 'all', or 'flagged' (only rows scoring above the "
        "threshold; null for the others, and only those rows pay for it)",
        typeConverter=_one_of("attributionScope", ("all", "flagged")))
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
    featureScaling: Param[str] = Param(
        Params._dummy(), "featureScaling",
        "'none' (the trees see the raw values, as SageMaker's RCF does) or 'robust' (each feature "
        "centred on its training median and divided by its interquartile range; kept with the model "
        "and applied to every scored row)",
        typeConverter=_one_of("featureScaling", ("none", "robust")))

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._setDefault(
            featuresCol="features", predictionCol="rcf_anomaly", scoreCol="rcf_score",
            attributionCol="", attributionScope="all", numTrees=100, numSamplesPerTree=256,
            thresholdMethod="sigma", thresholdSigmas=3.0, thresholdQuantile=0.99,
            featureScaling="none", seed=_DEFAULT_SEED)

    def getScoreCol(self) -> str:
        return self.getOrDefault(self.scoreCol)

    def getAttributionCol(self) -> str:
        return self.getOrDefault(self.attributionCol) or ""

    def getAttributionScope(self) -> str:
        return self.getOrDefault(self.attributionScope)

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

    def getFeatureScaling(self) -> str:
        return self.getOrDefault(self.featureScaling)


class RandomCutForest(Estimator, _RandomCutForestParams, DefaultParamsReadable,
                      DefaultParamsWritable):
    """Unsupervised Random Cut Forest, trained on a sample of the input, scored by Spark.

    ``featuresCol`` holds a Vector (e.g. from ``VectorAssembler``) or an array of numbers.
    Training draws ``numTrees * numSamplesPerTree`` rows with ``seed`` (each tree gets its own
    disjoint share when there are enough rows), builds the trees on the driver and sets the
    anomaly threshold from the scores of the sampled rows. With an ``attributionCol``,
    ``attributionScope="flagged"`` limits the (costlier) attribution to rows scoring above
    that threshold.

    >>> rcf = RandomCutForest(featuresCol="features", numTrees=100, attributionCol="why")
    >>> model = rcf.fit(train_df)            # doctest: +SKIP
    >>> model.transform(df).select("rcf_score", "rcf_anomaly", "why")   # doctest: +SKIP
    """

    @keyword_only
    def __init__(self, *, featuresCol: str = "features", scoreCol: str = "rcf_score",
                 predictionCol: str = "rcf_anomaly", attributionCol: str = "",
                 attributionScope: str = "all", numTrees: int = 100, numSamplesPerTree: int = 256,
                 thresholdMethod: str = "sigma", thresholdSigmas: float = 3.0,
                 thresholdQuantile: float = 0.99, featureScaling: str = "none",
                 seed: Optional[int] = None) -> None:
        super().__init__()
        kwargs = self._input_kwargs
        self.setParams(**kwargs)

    @keyword_only
    def setParams(self, *, featuresCol: str = "features", scoreCol: str = "rcf_score",
                  predictionCol: str = "rcf_anomaly", attributionCol: str = "",
                  attributionScope: str = "all", numTrees: int = 100, numSamplesPerTree: int = 256,
                  thresholdMethod: str = "sigma", thresholdSigmas: float = 3.0,
                  thresholdQuantile: float = 0.99, featureScaling: str = "none",
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

    def setAttributionScope(self, value: str) -> "RandomCutForest":
        return self._set(attributionScope=value)

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

    def setFeatureScaling(self, value: str) -> "RandomCutForest":
        return self._set(featureScaling=value)

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
        forest = Forest.fit(pool, num_trees=num_trees, samples=per_tree, seed=seed,
                            scaling=self.getFeatureScaling())
        threshold = _threshold(forest.score(pool), self.getThresholdMethod(),
                               self.getThresholdSigmas(), self.getThresholdQuantile())
        model = RandomCutForestModel(forest=forest, threshold=threshold)
        model._resetUid(self.uid)
        return self._copyValues(model)


class RandomCutForestModel(Model, _RandomCutForestParams, MLReadable, MLWritable):
    """Fitted Random Cut Forest: adds ``scoreCol``, ``predictionCol`` (score > threshold;
    empty name = not produced) and, when set, ``attributionCol``: for every row, or with
    ``attributionScope="flagged"`` only for rows scoring above the threshold (null elsewhere;
    every row is scored by the score-only kernel and only those rows by the attribution one).
    """

    def __init__(self, forest: Optional[Forest] = None,
                 threshold: Optional[float] = None) -> None:
        super().__init__()
        self._forest = forest
        self._threshold = None if threshold is None else float(threshold)
        # the forest's broadcast, made once per SparkContext and shared by copies (a stream
        # transforms a copy of the same model every micro-batch)
        self._broadcasts: Dict[str, Any] = {}

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

    def setAttributionScope(self, value: str) -> "RandomCutForestModel":
        return self._set(attributionScope=value)

    def setThreshold(self, value: float) -> "RandomCutForestModel":
        """Override the fitted threshold (e.g. from a labelled validation set)."""
        self._threshold = float(value)
        return self

    def score(self, X: Any) -> np.ndarray:
        """Score a numpy matrix without Spark (same numbers as ``transform``)."""
        return self.forest.score(X)

    def forest_broadcast(self, sc: Any) -> Any:
        """The forest's arrays as a broadcast variable of ``sc``, made once per SparkContext.

        Executors turn it back into a :class:`Forest` once per Python worker
        (:func:`forest_from_broadcast`).
        """
        held = self._broadcasts.get("forest")
        if held is None or held[0] is not sc:
            held = self._broadcasts["forest"] = (sc, sc.broadcast(self.forest.to_arrays()))
        return held[1]

    def _transform(self, dataset: Any) -> Any:
        from pyspark.sql import functions as F
        from pyspark.sql.functions import pandas_udf
        from pyspark.sql.types import ArrayType, DoubleType, StructField, StructType

        forest = self.forest
        feats = _features_as_array(dataset, self.getFeaturesCol())
        bc = self.forest_broadcast(dataset.sparkSession.sparkContext)
        score_col = self.getScoreCol()
        attr_col = self.getAttributionCol()
        pred_col = self.getPredictionCol()
        min_score = None  # attribution for every row
        if attr_col and self.getAttributionScope() == "flagged":
            if self._threshold is None:
                raise ValueError("attributionScope='flagged' needs the model's threshold, and "
                                 "this model has none (see setThreshold)")
            min_score = self._threshold

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
                return _score_columns(bc.value, cols, True, min_score)

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
        that._broadcasts = self._broadcasts
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


_FOREST_CACHE: Dict[int, Forest] = {}


def forest_from_broadcast(bc: Any) -> Forest:
    """The :class:`Forest` of a :meth:`RandomCutForestModel.forest_broadcast` (built once per worker)."""
    return _forest_from_arrays_cached(bc.value)


def _forest_from_arrays_cached(arrays: Dict[str, np.ndarray]) -> Forest:
    key = id(arrays)
    forest = _FOREST_CACHE.get(key)
    if forest is None:
        _FOREST_CACHE.clear()
        forest = _FOREST_CACHE[key] = Forest.from_arrays(arrays)
    return forest


def _score_columns(arrays: Dict[str, np.ndarray], cols: Sequence[Any], want_attr: bool,
                   min_score: Optional[float] = None) -> Any:
    """Score a batch given as one pandas Series of doubles per feature (null = NaN)."""
    forest = _forest_from_arrays_cached(arrays)
    X = np.empty((len(cols[0]), len(cols)))
    for j, c in enumerate(cols):
        X[:, j] = c.to_numpy(dtype=np.float64, na_value=np.nan)
    return _score_matrix(forest, X, want_attr, min_score)


def _score_matrix(forest: Forest, X: np.ndarray, want_attr: bool,
                  min_score: Optional[float] = None) -> Any:
    """Scores (a Series), or a frame of scores and attributions (None where not computed).

    ``min_score``: attribution only for rows scoring above it (see
    :meth:`Forest.score_and_attribution`).
    """
    import pandas as pd

    if want_attr:
        scores, attr = forest.score_and_attribution(X, min_score=min_score)
        attr_list: List[Any] = [None] * len(scores)
        for i in np.flatnonzero(~np.isnan(attr).any(axis=1)):
            attr_list[i] = attr[i]
        return pd.DataFrame({"score": pd.Series(scores).where(~np.isnan(scores), None),
                             "attribution": attr_list})
    scores = forest.score(X)
    return pd.Series(scores).where(~np.isnan(scores), None)


# --------------------------------------------------------------------------------------------
# Persistence
# --------------------------------------------------------------------------------------------
class _RandomCutForestModelWriter(MLWriter):
    def __init__(self, instance: RandomCutForestModel) -> None:
        super().__init__()
        self.instance = instance

    def saveImpl(self, path: str) -> None:
        extra = {"threshold": self.instance.threshold, "forestFile": FOREST_FILE,
                 "forestFormatVersion": _FORMAT_VERSION}
        DefaultParamsWriter.saveMetadata(self.instance, path, self.sc, extraMetadata=extra)
        fs.write_bytes(fs.join(path, FOREST_FILE), self.instance.forest.to_bytes())


class _RandomCutForestModelReader(MLReader):
    def __init__(self, cls: type) -> None:
        super().__init__()
        self.cls = cls

    def load(self, path: str) -> RandomCutForestModel:
        metadata = DefaultParamsReader.loadMetadata(path, self.sc)
        forest = Forest.from_bytes(
            fs.read_bytes(fs.join(path, metadata.get("forestFile", FOREST_FILE))))
        model = self.cls(forest=forest, threshold=metadata.get("threshold"))
        model._resetUid(metadata["uid"])
        DefaultParamsReader.getAndSetParams(model, metadata)
        return model


def _warn_without_numba() -> None:
    if not HAVE_NUMBA:  # pragma: no cover
        warnings.warn("numba is not installed: Random Cut Forest scoring runs as plain Python "
                      "and is about 100 times slower", RuntimeWarning, stacklevel=2)


_warn_without_numba()
