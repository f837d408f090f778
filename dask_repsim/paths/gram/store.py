"""A Gram store: each layer's centred Gram matrix kept in a Zarr group, so that later grids read
n x n numbers per layer instead of its n x p activations.

For a wide layer (p > n, a flattened conv layer) the centred Gram matrix ``K = H X X^T H``
(``H = I - 11^T / n``) is smaller than the activations, and linear CKA and debiased CKA of any
pair are functions of the two layers' Gram matrices alone: ``sum K * L``, the row sums and the
diagonals (:class:`~dask_repsim.measures.hsic.GramSums`; the unbiased HSIC does not depend on a
shift of the features, so the centred matrix serves it as well). A zoo that keeps them grows by
its new networks alone (:func:`dask_repsim.grow_zoo`).

Layout: one float64 array per layer under its key (``"network/layer"`` for a zoo), ``(n, n)``,
uncompressed, chunked in row blocks of about :data:`CHUNK_BYTES`: ``8 n^2`` bytes of disk per
layer. The array's attribute :data:`GRAM_ATTR` says what it was formed from: ``n``, the layer's
``width`` and ``dtype``, its sample labels (``samples``, as strings, or ``None``), ``content``
(a SHA-256 of its first and last :data:`HASHED_ROWS` samples, as the Gram path reads them) and
``fingerprint`` (a digest of all these), and ``complete`` (false until every row is written).

Writing happens while the sample-space tiles form the Gram matrices
(:func:`~dask_repsim.paths.gram.samplespace.grid_sums` with a :class:`Keep`): in one row block
each layer's whole matrix is centred and written by the task that summed it; with several row
blocks each tile's block goes to the scratch directory and a task per layer and row chunk
assembles, centres and writes it. Reading (:func:`stored_sums`) takes row blocks of every
stored matrix a grid needs, sized to the memory budget, never a whole matrix unless it fits.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import dask
import numpy as np
import zarr

from ...engine.parallel import compute, memory_budget, task_slots, threads_per_process
from ...exceptions import RepsimWarning, SampleCountError
from ...io.inputs import Layer
from ...measures.hsic import GramSums
from ...results import Cell, Cells, Positions, grid_cells
from .samplespace import cka_from_sums, grid_sums

#: the attribute of a stored Gram matrix that says what it was formed from
GRAM_ATTR = "dask_repsim_gram"
#: what the attribute's layout is; a store of another format is formed again
FORMAT = 1
#: the metrics a Gram store computes: functions of the linear Gram matrices
METRICS = ("cka", "cka_debiased")
#: bytes of a stored Gram matrix's row chunk (about)
CHUNK_BYTES = 2**23
#: samples at each end of a layer whose values the fingerprint hashes
HASHED_ROWS = 16


def chunk_rows(n: int) -> int:
    """Rows of a stored n x n Gram matrix's chunk: about :data:`CHUNK_BYTES` each.

    Examples
    --------
    >>> chunk_rows(2000), chunk_rows(300)
    (524, 300)
    """
    return max(1, min(n, CHUNK_BYTES // (8 * n)))


def check_metrics(metrics: Sequence[str], method: str) -> None:
    """An error for a metric a Gram store cannot compute, or a path other than ``gram``.

    Examples
    --------
    >>> check_metrics(["cka", "cka_rbf"], "auto")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: gram_store= keeps each layer's linear Gram matrix, ... cka_rbf cannot be ...
    """
    bad = [m for m in metrics if m not in METRICS]
    if bad:
        why = " (RBF CKA needs each layer's squared distances and their median)" \
            if "cka_rbf" in bad else ""
        raise ValueError(
            f"gram_store= keeps each layer's linear Gram matrix, from which "
            f"{' and '.join(METRICS)} follow; {', '.join(bad)} cannot be computed from it{why}; "
            "compare those metrics without gram_store=")
    if method not in ("auto", "gram"):
        raise ValueError(f"gram_store= keeps the Gram matrices of method='gram' (or 'auto'), not "
                         f"method={method!r}")


class GramStore:
    """The Zarr group of a Gram store: a path or URL (created when missing), a group, or a
    Zarr store object."""

    def __init__(self, where: Any, storage_options: Mapping[str, Any] | None = None) -> None:
        if isinstance(where, zarr.Group):
            self.group, self.location = where, str(where.store_path)
        elif isinstance(where, str | os.PathLike):
            path = os.fspath(where)
            options = dict(storage_options) if storage_options and "://" in path else None
            self.group = zarr.open_group(path, mode="a", storage_options=options)
            self.location = path
        else:
            self.group, self.location = zarr.open_group(where, mode="a"), str(where)

    def info(self, key: str) -> dict | None:
        """What the complete Gram matrix under ``key`` was formed from, or ``None`` when the
        store holds none (or an incomplete one)."""
        try:
            node = self.group[key]
        except KeyError:
            return None
        if not isinstance(node, zarr.Array):
            raise ValueError(f"{key!r} in the Gram store at {self.location} is a group, not a "
                             "Gram matrix; a layer and a network cannot share a name there")
        info = node.attrs.get(GRAM_ATTR)
        if not isinstance(info, dict) or not info.get("complete") or \
                info.get("format") != FORMAT:
            return None
        return dict(info)

    def array(self, key: str) -> zarr.Array:
        return self.group[key]

    def create(self, key: str, n: int) -> zarr.Array:
        """An empty n x n matrix under ``key`` (replacing what was there), marked incomplete."""
        return self.group.create_array(
            key, shape=(n, n), chunks=(chunk_rows(n), n), dtype="float64", compressors=None,
            fill_value=0.0, overwrite=True, dimension_names=("sample_i", "sample_j"),
            attributes={GRAM_ATTR: {"format": FORMAT, "complete": False}})

    def complete(self, key: str, info: Mapping[str, Any]) -> None:
        """Mark the matrix under ``key`` written, formed from what ``info`` says."""
        self.group[key].attrs[GRAM_ATTR] = {**info, "complete": True}


def digest(info: Mapping[str, Any]) -> str:
    """The fingerprint of what a Gram matrix is formed from (16 hex digits)."""
    text = json.dumps({k: info[k] for k in ("format", "n", "width", "dtype", "samples",
                                            "content")}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ends_of(data: Any) -> tuple[slice, slice]:
    """The rows a fingerprint hashes: the first and last :data:`HASHED_ROWS` samples."""
    n = data.shape[0]
    k = min(n, HASHED_ROWS)
    return slice(0, k), slice(n - k, n)


def contents(layers: Sequence[Layer]) -> list[str]:
    """The SHA-256 of each layer's first and last samples (as the Gram path reads them:
    for a Zarr array, its first and last row chunks), read in one computation."""
    done = compute(*(x.data[s] for x in layers for s in ends_of(x.data)))
    out = []
    for i in range(len(layers)):
        h = hashlib.sha256()
        for part in done[2 * i:2 * i + 2]:
            h.update(np.ascontiguousarray(part).tobytes())
        out.append(h.hexdigest())
    return out


def fingerprint(layer: Layer, samples: list[str] | None, content: str) -> dict[str, Any]:
    """What a layer's Gram matrix is formed from (see the module notes), with its digest."""
    info = {"format": FORMAT, "n": int(layer.data.shape[0]), "width": int(layer.data.shape[1]),
            "dtype": str(layer.data.dtype), "samples": samples, "content": content}
    return {**info, "fingerprint": digest(info)}


def write_centred(targets: Sequence[zarr.Array], rows: np.ndarray, start: int,
                  row_sums: np.ndarray) -> None:
    """Write rows ``start:start + len(rows)`` of a layer's Gram matrix, centred on both sides
    (``H K H`` from ``K``'s row sums), chunk by chunk to each of ``targets``."""
    n = len(row_sums)
    total = row_sums.sum()
    step = targets[0].chunks[0]
    for a in range(0, len(rows), step):
        b = min(len(rows), a + step)
        block = rows[a:b] - row_sums[start + a:start + b, None] / n
        block -= row_sums[None, :] / n
        block += total / n**2
        for target in targets:
            target[start + a:start + b] = block


class Keep:
    """Where :func:`~dask_repsim.paths.gram.samplespace.grid_sums` puts each layer's Gram
    matrix as it forms it: centred, into ``targets[layer]`` (the arrays of its keys); and the
    first and last samples of each layer (``layers``) as the tiles read them, for
    :meth:`content`."""

    def __init__(self, targets: Sequence[Sequence[zarr.Array]], layers: Sequence[Layer],
                 n: int) -> None:
        self.targets, self.n = targets, n
        self.scratch: Any = None  # grid_sums's scratch directory, set before the tiles run
        self.at = ends_of(layers[0].data)
        self.ends = [[(np.empty((e.stop - e.start, x.data.shape[1]), x.data.dtype),
                       np.zeros((e.stop - e.start, x.data.shape[1]), bool))
                      for e in ends_of(x.data)] for x in layers]

    def rows(self, layer: int, start: int, x: np.ndarray, cols: tuple[int, int] | None) -> None:
        """Rows ``start:start + len(x)`` (columns ``cols``, else all) as read: the first and
        last samples among them are copied."""
        c0, c1 = (0, x.shape[1]) if cols is None else cols
        for (values, seen), e in zip(self.ends[layer], self.at, strict=True):
            a, b = max(e.start, start), min(e.stop, start + len(x))
            if a < b:
                values[a - e.start:b - e.start, c0:c1] = x[a - start:b - start]
                seen[a - e.start:b - e.start, c0:c1] = True

    def content(self, layer: int) -> str | None:
        """The hash of :func:`contents` from the rows seen, ``None`` when some were not."""
        h = hashlib.sha256()
        for values, seen in self.ends[layer]:
            if not seen.all():
                return None
            h.update(values.tobytes())
        return h.hexdigest()

    def whole(self, layer: int, g: np.ndarray) -> None:
        """A layer's whole Gram matrix (one row block)."""
        write_centred(self.targets[layer], g, 0, g.sum(axis=1))

    def block(self, layer: int, tile: Any, g: np.ndarray) -> None:
        """A tile's block of a layer's Gram matrix, kept on scratch until :meth:`finish`."""
        self.scratch.save(layer, f"gram{tile.key}", g)

    def finish(self, tiles: Sequence[Any], row_sums: Sequence[np.ndarray]) -> None:
        """Assemble, centre and write every layer's rows from its tiles, a task per layer
        and row chunk."""
        step = self.targets[0][0].chunks[0]
        compute(*(dask.delayed(self._rows, pure=False)(layer, tiles, start, row_sums[layer])
                  for layer in range(len(self.targets)) for start in range(0, self.n, step)))

    def _rows(self, layer: int, tiles: Sequence[Any], start: int, row_sums: np.ndarray) -> None:
        stop = min(self.n, start + self.targets[layer][0].chunks[0])
        out = np.empty((stop - start, self.n))
        for t in tiles:
            g = np.load(self.scratch.file(layer, f"gram{t.key}"), mmap_mode="r")
            a, b = max(start, t.rows[0]), min(stop, t.rows[1])
            if a < b:
                out[a - start:b - start, t.cols[0]:t.cols[1]] = g[a - t.rows[0]:b - t.rows[0]]
            a, b = max(start, t.cols[0]), min(stop, t.cols[1])
            if not t.same and a < b:
                out[a - start:b - start, t.rows[0]:t.rows[1]] = \
                    g[:, a - t.cols[0]:b - t.cols[0]].T
        write_centred(self.targets[layer], out, start, row_sums)


def read_rows(n: int, count: int, chunk: int) -> int:
    """Rows of every one of ``count`` stored n x n matrices (``chunk`` rows a chunk) that a
    task reads at once: within the memory budget's share of a task (less one decoded chunk);
    when that holds a chunk, whole chunks (each read once), as many as leave a task for every
    slot.

    Examples
    --------
    >>> import dask
    >>> with dask.config.set({"repsim.memory-budget": 2**30, "scheduler": "threads",
    ...                       "num_workers": 2}):
    ...     read_rows(2000, 15, 524), read_rows(300, 3, 300), read_rows(20_000, 15, 52)
    (524, 300, 208)
    """
    share = memory_budget() // max(1, threads_per_process()) - 8 * n * chunk  # a decoded chunk
    rows = int(share // (8 * n * count))
    if rows < 1:
        raise ValueError(
            f"the memory budget ({memory_budget() / 2**20:.0f} MiB for {threads_per_process()} "
            f"thread(s)) holds not one row of each of {count} stored Gram matrices of {n} "
            "samples; raise dask config 'repsim.memory-budget'")
    if rows < chunk:
        return rows
    return max(chunk, min(rows, -(-n // task_slots())) // chunk * chunk)


def _block_sums(arrays: Sequence[zarr.Array], start: int, stop: int,
                pairs: Sequence[tuple[int, int]]) -> tuple[np.ndarray, list, list]:
    """Rows ``start:stop`` of every matrix: ``sum K_a * K_b`` over them for each pair, each
    matrix's row sums and its diagonal there."""
    blocks = [np.asarray(a[start:stop], dtype=np.float64) for a in arrays]
    pair = np.array([float(np.vdot(blocks[a], blocks[b])) for a, b in pairs])
    span = np.arange(stop - start)
    return pair, [k.sum(axis=1) for k in blocks], [k[span, start + span] for k in blocks]


def stored_sums(arrays: Mapping[int, zarr.Array], pairs: Sequence[tuple[int, int]],
                n: int) -> dict[tuple[int, int], GramSums]:
    """The :class:`GramSums` of every pair ``(a, b)`` of stored Gram matrices (``arrays[a]``),
    from row blocks of all those the pairs name (:func:`read_rows`), a task per block."""
    involved = sorted({u for p in pairs for u in p})
    index = {u: k for k, u in enumerate(involved)}
    wanted = sorted({(index[a], index[b]) for a, b in pairs} | {(k, k) for k in index.values()})
    chunk = int(arrays[involved[0]].chunks[0])
    step = read_rows(n, len(involved), chunk)
    listed = [arrays[u] for u in involved]
    done = compute(*(dask.delayed(_block_sums, pure=False)(listed, s, min(n, s + step), wanted)
                     for s in range(0, n, step)))
    total = np.sum([d[0] for d in done], axis=0)
    rows = [np.concatenate([d[1][k] for d in done]) for k in range(len(involved))]
    diag = [np.concatenate([d[2][k] for d in done]) for k in range(len(involved))]
    at = {p: c for c, p in enumerate(wanted)}
    out = {}
    for a, b in pairs:
        i, j = index[a], index[b]
        out[a, b] = GramSums(n, total[at[min(i, j), max(i, j)]], total[at[i, i]], total[at[j, j]],
                             rows[i], rows[j], diag[i], diag[j])
    return out


def _sort_out(store: GramStore, layers: Sequence[Layer | None], keys, used: Sequence[int],
              samples: list[str] | None) -> tuple[dict[int, dict], list[int]]:
    """What the used layers' stored Gram matrices were formed from (for the layers given,
    those the store holds formed from the same data), and the given layers to form: those
    whose keys the store lacks or holds formed from other data (a warning says which). Only the
    layers the store holds are fingerprinted here (:func:`contents` reads their first and last
    samples). A layer given as ``None`` is read from the store as it is."""
    held = {u: [store.info(k) for k in keys[u]] for u in used}
    check = [u for u in used if layers[u] is not None and any(h is not None for h in held[u])]
    prints = {u: fingerprint(layers[u], samples, c) for u, c in
              zip(check, contents([layers[u] for u in check]), strict=True)}
    infos, fresh = {}, []
    for u in used:
        if layers[u] is None:
            if held[u][0] is None:
                raise ValueError(f"the Gram store at {store.location} holds no Gram matrix of "
                                 f"{keys[u][0]!r}")
            infos[u] = held[u][0]
        elif u in prints and all(h is not None and h["fingerprint"] == prints[u]["fingerprint"]
                                 for h in held[u]):
            infos[u] = prints[u]  # read from the store
        else:
            if u in prints:
                stale = [k for k, h in zip(keys[u], held[u], strict=True) if h is not None]
                warnings.warn(
                    f"the Gram store at {store.location} holds the Gram matrix of "
                    f"{', '.join(stale)} formed from other data (its samples, width, dtype or "
                    "the values of its first and last samples differ); it is formed again and "
                    "replaced", RepsimWarning, stacklevel=5)
            fresh.append(u)
    return infos, fresh


def _form(store: GramStore, layers, keys, fresh: Sequence[int], pairs, samples, prints,
          block_rows) -> tuple[dict, dict[str, Any]]:
    """Form the Gram matrices of the layers ``fresh`` on the sample-space tiles, write them to
    ``store`` and mark them complete: the sums of the ``pairs`` among them and the run's attrs.
    ``prints``: the fingerprints known (the others' from the rows the tiles read)."""
    pos = {u: k for k, u in enumerate(fresh)}
    own = [(pos[a], pos[b]) for a, b in pairs if a in pos and b in pos]
    formed = [layers[u] for u in fresh]
    n = int(formed[0].data.shape[0])
    keep = Keep([[store.create(k, n) for k in keys[u]] for u in fresh], formed, n)
    got, attrs = grid_sums(formed, own, rows=block_rows, keep=keep)
    for u in fresh:
        if u not in prints:
            content = keep.content(pos[u]) or contents([layers[u]])[0]
            prints[u] = fingerprint(layers[u], samples, content)
        for k in keys[u]:
            store.complete(k, prints[u])
    return {(fresh[a], fresh[b]): got[0, a, b] for a, b in own}, attrs


def _one_n(infos: Mapping[int, dict], keys) -> int:
    """The samples of every Gram matrix of a grid, which must be the same."""
    counts = {u: info["n"] for u, info in infos.items()}
    if len(set(counts.values())) > 1:
        shown = ", ".join(f"{keys[u][0]}: {c}" for u, c in counts.items())
        raise SampleCountError(f"the layers of a Gram store's grid must have the same samples; "
                               f"they have {shown}")
    return next(iter(counts.values()))


def store_cells(specs: Sequence[Mapping[str, Any]], layers: Sequence[Layer | None],
                keys: Sequence[Sequence[str]], rows: Sequence[int], cols: Sequence[int],
                store: GramStore, *, samples: list[str] | None, todo: Positions | None = None,
                block_rows: int | None = None) -> tuple[Cells, dict[str, Any], dict[str, str]]:
    """CKA cells of a grid whose layers' Gram matrices go to (or come from) ``store``.

    ``layers[u]``: a layer of the grid, or ``None`` for one read from the store alone (a zoo's
    old networks, whose activations are not read); ``keys[u]``: its keys in the store (labels);
    ``rows``, ``cols``, ``todo``: as for :func:`~dask_repsim.paths.gram.samplespace.gram_cells`;
    ``specs[m]``: ``{"debiased": bool}``; ``samples``: the grid's sample labels (strings) or
    ``None``. A given layer whose keys hold a Gram matrix formed from the same data
    (:func:`fingerprints`) is read from the store; the others are formed on the sample-space
    tiles once for the grid, their pairs summed there, and written to the store as they are
    formed. Every pair with a stored layer is summed from the stored matrices by row blocks
    (:func:`stored_sums`).

    Returns the cells, the run's attrs and each key's fingerprint.
    """
    wanted = grid_cells(rows, cols, todo)
    used = sorted({rows[i] for i, _ in wanted} | {cols[j] for _, j in wanted})
    pairs = sorted({tuple(sorted((rows[i], cols[j]))) for i, j in wanted})
    infos, fresh = _sort_out(store, layers, keys, used, samples)
    n = _one_n({**infos, **{u: {"n": layers[u].data.shape[0]} for u in fresh}}, keys)
    sums: dict[tuple[int, int], GramSums] = {}
    attrs: dict[str, Any] = {}
    if fresh:
        sums, attrs = _form(store, layers, keys, fresh, pairs, samples, infos, block_rows)
    rest = [p for p in pairs if p not in sums]
    if rest:
        sums.update(stored_sums({u: store.array(keys[u][0]) for u in used}, rest, n))
    cells: Cells = {}
    for m, spec in enumerate(specs):
        for i, j in wanted:
            a, b = sorted((rows[i], cols[j]))
            value = cka_from_sums(sums[a, b], (keys[a][0], keys[b][0]), bool(spec["debiased"]))
            cells[m, i, j] = Cell(value, fields={"method": "gram", "approximate": None})
    attrs = {**attrs, "n_samples": n, "n_samples_omitted": 0, "gram_store": store.location,
             "gram_formed": len(fresh), "gram_read": len(used) - len(fresh)}
    return cells, attrs, {k: infos[u]["fingerprint"] for u in used for k in keys[u]}
