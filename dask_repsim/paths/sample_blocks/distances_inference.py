"""The client's side of the distance tiles (:mod:`~dask_repsim.paths.sample_blocks.distances`):
the measures, their permutation nulls and their jackknife replicates from the tiles' sums, all
from the one pass over the tiles that gives the values.

Each tile task sums, for each pair of matrices ``a``, ``b`` it forms (the two layers' offset
distances, or their Laplace kernels at one bandwidth), ``a * b``, ``a * a`` and ``b * b`` and
the row sums of both (:func:`tile_products`); double centring then needs no second pass:
``<HaH, HbH> = <a, b> - (2/n) r_a . r_b + (1' r_a)(1' r_b) / n^2`` (:class:`Products`).

**Permutation nulls** (``null=(count, seed)``). Pairing sample ``P(i)`` of y with sample i of x
turns y's matrix ``b`` into ``P b P'``: its own sums and the multiset of its row sums do not
change, only the cross sum ``<a, P b P'>`` and ``r_a . (P r_b)``. Each tile adds the first for
every permutation (:func:`~dask_repsim.paths.sample_blocks.rsa_null.permuted_cross` on its
blocks, taken less a constant as for the value, so that the terms do not cancel); the second is
the row sums permuted, on the client. The permutations are RSA's
(:mod:`~dask_repsim.paths.sample_blocks.rsa_null`): within blocks of
:data:`~dask_repsim.engine.permuted.PERMUTATION_BLOCK` consecutive samples, seeded by the seed
and each block's first sample, so the null depends on the seed and n only; row blocks of the
tiles are whole permutation blocks (:func:`~dask_repsim.paths.sample_blocks.rsa_null.
null_rows`). Distance correlation and Laplace CKA (every bandwidth) follow; the RSM norm
difference from ``||D - P E P'||^2 = ||D - E||^2 - 2 (<D, P E P'> - <D, E>)`` (the offsets add
terms that do not change under P). The uniformity and concentricity differences compare
per-layer statistics, which no pairing changes: they have no null.

**Jackknife replicates** (``groups=G``, contiguous groups of
:func:`~dask_repsim.engine.stream.group_bounds`). Each tile also sums its products over each
block of groups ``(g, h)`` and its rows over each group of columns (:class:`TileExtra`), as the
Gram path's jackknife (:mod:`~dask_repsim.paths.gram.jackknife`). Leaving group g out::

    sum over (i, j) outside g = sum of S[a, b] over a, b != g
    row sums without g's columns = sum of B[:, h] over h != g

(added up, not the total less g's part as the Gram path's: a group holding an outlying sample
would leave the rest to the total's rounding), and the double centring of the remaining
``m = n - n_g`` samples is the same identity with those: each replicate is the measure
recomputed exactly on the samples outside g. So are the RSM norm difference's (the norm over
the remaining samples' matrix: it scales with their number), the uniformity's (``exp(-2 d^2)``
summed by blocks of groups) and the concentricity's (each group's sums of its samples and of
their unit vectors, from the diagonal tiles: ``C_(g) = <U - u_g, S - s_g> / (m ||S - s_g||)``).
Laplace CKA keeps the bandwidths of all samples (each layer's median) in every replicate, as
the Gram path's RBF CKA.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...engine import permuted as _permuted
from ...engine.stream import replicate_bounds
from ...exceptions import InputError
from .rsa_null import NullSpec, permuted_cross

#: the measures whose value depends on which sample of one layer goes with which of the other:
#: those with a permutation null
PAIRED = ("distance_correlation", "rsm_norm_difference", "cka_laplace")
#: the sums of a pair of matrices ``a``, ``b``: key -> (which of a, b; which of a, b)
_KEYS = {"xy": (0, 1), "xx": (0, 0), "yy": (1, 1)}


@dataclass(frozen=True)
class TileExtra:
    """What a tile task adds for inference: its samples (``rows``, ``cols``; ``same`` on the
    diagonal), the permutations (``null``) and the jackknife's group ``bounds``, each None
    when not asked for."""

    same: bool
    rows: tuple[int, int]
    cols: tuple[int, int]
    null: NullSpec | None = None
    bounds: tuple[int, ...] | None = None

    def pieces(self, span: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """The groups the samples ``span`` meet and where each starts, from ``span[0]``.

        Examples
        --------
        >>> TileExtra(False, (0, 1), (0, 1), bounds=(0, 33, 67, 100)).pieces((30, 70))
        (array([0, 1, 2]), array([ 0,  3, 37]))
        """
        bounds = np.asarray(self.bounds)
        first = int(np.searchsorted(bounds, span[0], side="right")) - 1
        groups = np.arange(first, int(np.searchsorted(bounds, span[1], side="left")))
        return groups, np.maximum(bounds[groups], span[0]) - span[0]

    def blocks(self, m: np.ndarray) -> np.ndarray | None:
        """G x G sums of the tile's matrix ``m`` over each block of groups, its mirror tile's
        added off the diagonal; None without groups."""
        if self.bounds is None:
            return None
        (gr, sr), (gc, sc) = self.pieces(self.rows), self.pieces(self.cols)
        out = np.zeros((len(self.bounds) - 1,) * 2)
        # along the rows first: numpy's reduceat down the columns of a large matrix is slow
        out[np.ix_(gr, gc)] = np.add.reduceat(np.add.reduceat(m, sc, axis=1), sr, axis=0)
        return out if self.same else out + out.T

    def by_group(self, m: np.ndarray, axis: int) -> np.ndarray:
        """The sums of ``m`` over each group of its columns (``axis=1``: per row of the tile)
        or of its rows (``axis=0``: per column, the mirror tile's rows), as (samples, G)."""
        groups, starts = self.pieces(self.cols if axis == 1 else self.rows)
        part = np.add.reduceat(m, starts, axis=1) if axis == 1 else _down(m, starts).T
        out = np.zeros((part.shape[0], len(self.bounds) - 1))
        out[:, groups] = part
        return out

    def unit_sums(self, raw: np.ndarray, norms: np.ndarray) -> tuple | None:
        """On a diagonal tile: the groups it meets and, per group, the sums of its samples'
        activations and of their unit vectors (an all-zero sample counts 0); None without
        groups."""
        if self.bounds is None:
            return None
        groups, starts = self.pieces(self.rows)
        units = np.divide(raw, norms[:, None], out=np.zeros_like(raw), where=norms[:, None] > 0)
        return groups, _down(raw, starts), _down(units, starts)


def _down(m: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """The sums of ``m``'s rows from each of ``starts`` to the next (numpy's reduceat along
    axis 0 of a large matrix is several times slower than these slices' sums)."""
    stops = [*starts[1:], m.shape[0]]
    return np.stack([m[a:b].sum(axis=0) for a, b in zip(starts, stops, strict=True)])


def tile_products(a: np.ndarray, b: np.ndarray, weight: float, extra: TileExtra) -> dict:
    """A tile's sums of ``a * b``, ``a * a`` and ``b * b`` (``weight`` 2 off the diagonal:
    its mirror's too) and both blocks' row sums (their column sums too, for the mirror);
    with ``extra``'s groups the same by groups (:meth:`TileExtra.blocks`,
    :meth:`TileExtra.by_group`), with its permutations ``<a, P b P'>`` for each."""
    same = extra.same
    out: dict[str, Any] = {"rows_i": (a.sum(axis=1), b.sum(axis=1)),
                           "rows_j": None if same else (a.sum(axis=0), b.sum(axis=0))}
    for key, (s, t) in _KEYS.items():
        m = (a, b)[s] * (a, b)[t]
        out[key] = weight * float(np.sum(m))
        if extra.bounds is not None:
            out[f"{key}_groups"] = extra.blocks(m)
    if extra.bounds is not None:
        out["grows_i"] = (extra.by_group(a, 1), extra.by_group(b, 1))
        out["grows_j"] = None if same else (extra.by_group(a, 0), extra.by_group(b, 0))
    if extra.null is not None:  # a diagonal tile's is half its sum, an other's its mirror's
        out["cross"] = 2.0 * permuted_cross(a, b, same, extra.rows, extra.cols, extra.null)
    return out


def side_rows(parts: Sequence[dict], pairs: Sequence[tuple[int, int]], count: int,
              keys: tuple[str, str] = ("rows_i", "rows_j")) -> tuple[np.ndarray, np.ndarray]:
    """Each side's row sums (or row sums by group, (n, G)) over all samples from the tiles'."""
    rows: list[list[Any]] = [[0.0, 0.0] for _ in range(count)]
    for (i, j), part in zip(pairs, parts, strict=True):
        for side in (0, 1):
            rows[i][side] = rows[i][side] + part[keys[0]][side]
            if part[keys[1]] is not None:
                rows[j][side] = rows[j][side] + part[keys[1]][side]
    return tuple(np.concatenate([np.atleast_1d(block[side]) for block in rows])  # type: ignore
                 for side in (0, 1))


def centred(totals: dict[str, float], rows: tuple[np.ndarray, np.ndarray],
            n: int) -> dict[str, float]:
    """``<HaH, HbH>``, ``<HaH, HaH>``, ``<HbH, HbH>`` of ``n`` samples from the sums of the
    products (``totals``) and the row sums."""
    sums = (float(rows[0].sum()), float(rows[1].sum()))
    return {key: totals[key] - 2.0 * float(rows[s] @ rows[t]) / n + sums[s] * sums[t] / n**2
            for key, (s, t) in _KEYS.items()}


def _without(s: np.ndarray, g: int) -> float:
    """The sum of G x G group-block sums ``s`` over the blocks outside group g, added up
    rather than subtracted from the total: a group holding an outlying sample would leave
    the rest to the total's rounding."""
    keep = np.arange(len(s)) != g
    return float(s[np.ix_(keep, keep)].sum())


@dataclass
class Products:
    """The sums of one pair of matrices over all tiles: of the products, the row sums, and
    when asked for, the cross sums under each permutation and the sums by groups."""

    n: int
    totals: dict[str, float]
    rows: tuple[np.ndarray, np.ndarray]
    cross: np.ndarray | None = None
    blocks: dict[str, np.ndarray] | None = None
    grouped_rows: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def of(cls, parts: Sequence[dict], pairs: Sequence[tuple[int, int]], count: int,
           n: int) -> Products:
        """The sums of the tiles' :func:`tile_products` ``parts`` (tiles ``pairs`` of
        ``count`` row blocks)."""
        first = parts[0]
        grouped = "xy_groups" in first
        return cls(n, {k: sum(p[k] for p in parts) for k in _KEYS}, side_rows(parts, pairs, count),
                   sum(p["cross"] for p in parts) if "cross" in first else None,
                   {k: sum(p[f"{k}_groups"] for p in parts) for k in _KEYS} if grouped else None,
                   side_rows(parts, pairs, count, ("grows_i", "grows_j")) if grouped else None)

    def centred(self) -> dict[str, float]:
        """The centred products of all samples (:func:`centred`)."""
        return centred(self.totals, self.rows, self.n)

    def permuted(self, perm: np.ndarray, k: int) -> float:
        """``<HaH, H P b P' H>`` under permutation ``k``, ``perm`` (sample ``perm[i]`` of y
        paired with sample i of x)."""
        rx, ry = self.rows
        return float(self.cross[k] - 2.0 * float(rx @ ry[perm]) / self.n
                     + float(rx.sum()) * float(ry.sum()) / self.n**2)

    def replicates(self, bounds: Sequence[int]) -> list[dict[str, float]]:
        """The centred products of the samples outside each group of ``bounds``."""
        bx, by = self.grouped_rows
        out = []
        for g in range(len(bounds) - 1):  # row sums over the other groups' columns, added up
            keep = np.r_[0:bounds[g], bounds[g + 1]:self.n]
            rows = (np.delete(bx[keep], g, axis=1).sum(axis=1),
                    np.delete(by[keep], g, axis=1).sum(axis=1))
            out.append(centred({k: _without(s, g) for k, s in self.blocks.items()}, rows,
                               len(keep)))
        return out


def check_inference(measures: Sequence[str], null: tuple[int, int] | None,
                    groups: int | None, n: int) -> tuple[NullSpec | None, tuple | None]:
    """The permutations and jackknife group bounds asked for, or an error for a null of a
    measure without one or groups that leave too few samples."""
    spec = NullSpec.of(null)
    unpaired = [m for m in measures if m not in PAIRED]
    if spec is not None and unpaired:
        raise ValueError(f"{', '.join(unpaired)}: a difference of per-layer statistics does not "
                         "depend on how the two layers' samples are paired, so it has no "
                         "permutation null; leave it out of calls with null=")
    if not groups:
        return spec, None
    return spec, replicate_bounds(n, int(groups), 3, "the distance matrices")


def _ratio(c: dict[str, float], root: bool, names: Sequence[str], g: int | None) -> float:
    """Distance correlation (``root``) or CKA from centred products; an error when a side's
    centred matrix is zero (its samples all coincide), which only a replicate can meet."""
    for key, name in zip(("xx", "yy"), names, strict=True):
        if not c[key] > 0:
            where = "" if g is None else f"leaving out jackknife group {g}, the remaining "
            raise InputError(f"{name}: {where}samples all coincide, so the measure is "
                             "undefined" + ("" if g is None else "; use fewer groups or "
                                            "shuffle the samples"))
    # <A, B> >= 0 exactly (a V-statistic, positive definite kernels); rounding may leave a hair
    r = max(c["xy"], 0.0) / np.sqrt(c["xx"] * c["yy"])
    return float(np.sqrt(r) if root else r)


@dataclass(frozen=True)
class Request:
    """One pass's combination: ``n`` samples in ``count`` row blocks (tiles ``pairs``),
    ``measures``, ``sigmas`` bandwidths of Laplace CKA, each layer's ``means`` and ``names``,
    and the permutations and group bounds asked for (:func:`check_inference`)."""

    n: int
    count: int
    pairs: list[tuple[int, int]]
    measures: tuple[str, ...]
    sigmas: int
    means: tuple
    names: tuple[str, str]
    spec: NullSpec | None = None
    bounds: tuple[int, ...] | None = None


def combine(parts: list[dict], request: Request) -> dict[str, Any]:
    """The measures (Laplace CKA a list, one per bandwidth) and, when asked for, ``"null"`` and
    ``"replicates"`` (name -> list; Laplace CKA's a list per bandwidth) from the tiles."""
    r = request
    families: dict[Any, Products] = {}
    if {"distance_correlation", "rsm_norm_difference"} & set(r.measures):
        families["distances"] = Products.of(parts, r.pairs, r.count, r.n)
    for k in range(r.sigmas if "cka_laplace" in r.measures else 0):
        families[k] = Products.of([p["laplace"][k] for p in parts], r.pairs, r.count, r.n)
    out: dict[str, Any] = {}
    values = {key: f.centred() for key, f in families.items()}
    if "distance_correlation" in r.measures:
        out["distance_correlation"] = _ratio(values["distances"], True, r.names, None)
    if "rsm_norm_difference" in r.measures:
        out["rsm_norm_difference"] = float(np.sqrt(sum(p["diff"] for p in parts)))
    if "cka_laplace" in r.measures:
        out["cka_laplace"] = [_ratio(values[k], False, r.names, None) for k in range(r.sigmas)]
    out.update(_statistics(parts, r))
    out = {m: out[m] for m in r.measures}
    if r.spec is not None:
        out["null"] = _nulls(parts, families, values, r)
    if r.bounds is not None:
        out["replicates"] = _replicates(parts, families, r)
    return out


def _statistics(parts: Sequence[dict], r: Request) -> dict[str, float]:
    """The uniformity and concentricity differences (those in ``r.measures``)."""
    out = {}
    if "uniformity_difference" in r.measures:
        # log(sum_ij exp(-2 d_ij^2) / n^2) per layer; the n^2 cancels in the difference
        sums = [sum(p[f"uniform{side}"] for p in parts) for side in (0, 1)]
        out["uniformity_difference"] = float(abs(np.log(sums[0]) - np.log(sums[1])))
    if "concentricity_difference" in r.measures:
        level = [sum(p.get(f"concentric{side}", 0.0) for p in parts)
                 / (r.n * np.linalg.norm(r.means[side])) for side in (0, 1)]
        out["concentricity_difference"] = float(abs(level[0] - level[1]))
    return out


def _nulls(parts: Sequence[dict], families: dict[Any, Products], values: dict,
           r: Request) -> dict[str, list]:
    """Each paired measure under each permutation of y's samples."""
    out: dict[str, list] = {m: [] for m in r.measures}
    laplace: list[list[float]] = [[] for _ in range(r.sigmas)]
    diff = sum(p["diff"] for p in parts) if "distances" in families else 0.0
    series = _permuted.permutation_series(r.n, r.spec.seed, r.spec.count, r.spec.block)
    for k, perm in enumerate(series):
        for key, f in families.items():
            c = {**values[key], "xy": f.permuted(perm, k)}
            if key != "distances":
                laplace[key].append(_ratio(c, False, r.names, None))
                continue
            if "distance_correlation" in out:
                out["distance_correlation"].append(_ratio(c, True, r.names, None))
            if "rsm_norm_difference" in out:  # ||D - E||^2 less twice the change of <D, E>
                change = f.cross[k] - f.totals["xy"]
                out["rsm_norm_difference"].append(float(np.sqrt(max(diff - 2.0 * change, 0.0))))
    if "cka_laplace" in out:
        out["cka_laplace"] = laplace
    return out


def _replicates(parts: Sequence[dict], families: dict[Any, Products],
                r: Request) -> dict[str, list]:
    """Each measure on the samples outside each jackknife group."""
    out: dict[str, list] = {}
    reps = {key: f.replicates(r.bounds) for key, f in families.items()}
    groups = range(len(r.bounds) - 1)
    if "distance_correlation" in r.measures:
        out["distance_correlation"] = [_ratio(c, True, r.names, g)
                                       for g, c in zip(groups, reps["distances"], strict=True)]
    if "cka_laplace" in r.measures:
        out["cka_laplace"] = [[_ratio(c, False, r.names, g)
                               for g, c in zip(groups, reps[k], strict=True)]
                              for k in range(r.sigmas)]
    if "rsm_norm_difference" in r.measures:
        s = sum(p["diff_groups"] for p in parts)
        out["rsm_norm_difference"] = [float(np.sqrt(max(_without(s, g), 0.0))) for g in groups]
    if "uniformity_difference" in r.measures:
        s = [sum(p[f"uniform_groups{side}"] for p in parts) for side in (0, 1)]
        out["uniformity_difference"] = [
            float(abs(np.log(_without(s[0], g)) - np.log(_without(s[1], g)))) for g in groups]
    if "concentricity_difference" in r.measures:
        levels = [_concentricities(parts, side, r) for side in (0, 1)]
        out["concentricity_difference"] = [float(abs(a - b)) for a, b in zip(*levels,
                                                                               strict=True)]
    return out


def _concentricities(parts: Iterable[dict], side: int, r: Request) -> list[float]:
    """One layer's concentricity of the samples outside each group, from each group's sums of
    its activations and of their unit vectors (the diagonal tiles')."""
    g_count = len(r.bounds) - 1
    sums = units = None
    for part in parts:
        found = part.get(f"concentric_groups{side}")
        if found is None:
            continue
        groups, s, u = found
        if sums is None:
            sums, units = np.zeros((g_count, s.shape[1])), np.zeros((g_count, s.shape[1]))
        sums[groups] += s
        units[groups] += u
    out = []
    scale = np.linalg.norm(np.abs(sums).sum(axis=0))  # the sums' size, against rounding
    for g in range(g_count):
        m = r.n - (r.bounds[g + 1] - r.bounds[g])
        total = np.delete(sums, g, axis=0).sum(axis=0)
        norm = np.linalg.norm(total)
        if not norm > 1e-10 * scale:
            raise InputError(f"{r.names[side]}: leaving out jackknife group {g}, the mean of the "
                             "remaining samples' activations is the zero vector (to rounding), "
                             "so their concentricity is undefined; use fewer groups")
        out.append(float(np.delete(units, g, axis=0).sum(axis=0) @ total / (m * norm)))
    return out
