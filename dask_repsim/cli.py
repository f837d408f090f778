"""The ``dask-repsim`` command: compare every layer of one network with every layer of another.

::

    dask-repsim compare A [B] [--metric M ...] [--sample-dims D ...] [--join inner]
                              [--scheduler ADDRESS] [--out FILE.nc] [--plot FILE.png] [--json]
                              [--summary max|matched] [--progress] [--debug]
    dask-repsim import FORMAT SOURCE STORE [--layer L ...] [--resume] [--overwrite]
                              [--chunk-samples N] [--dtype D] [--preprocessing TEXT]

``A`` and ``B`` are Zarr stores (local paths or fsspec URLs; a group gives one layer per array,
an array one layer) or netCDF files (one layer per data variable). Without ``B``, ``A`` is
compared with itself. All layers are read in one pass (:func:`dask_repsim.compare`), on local
threads or, with ``--scheduler``, on a running Dask cluster.

A Zarr group that holds groups and no layer of its own is a model zoo, one group per network
(as several :func:`dask_repsim.capture_activations` calls write into one store): ``A`` alone is
then compared with itself, or with the zoo ``B``, every layer of every network against every
layer of every other (:func:`dask_repsim.compare_zoo`). A zoo and a single network are not
compared with each other.

``import`` writes another tool's activation files (FORMAT: arrays, thingsvision, net2brain,
platonic, brainscore, torchlens, hf_dataset; :mod:`dask_repsim.imports`) into a capture store that
``compare`` reads, chunk by chunk; ``--resume`` continues an interrupted import.

User errors (a missing path, an unknown metric, inputs with different numbers of samples) print
one line ``dask-repsim: error: ...`` on stderr and exit with status 1 (2 for bad arguments);
``--debug`` prints the traceback too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import dask
import zarr

from .capture.rules import SAMPLE
from .capture.store import STATE_ATTR
from .cli_output import as_json, check_parent, plot_format, save_plots, save_result, table
from .exceptions import RepsimWarning
from .grid import compare
from .imports.arrays import import_arrays
from .imports.brainscore import import_brainscore
from .imports.hf_datasets import import_hf_dataset
from .imports.net2brain import import_net2brain
from .imports.platonic import import_platonic
from .imports.thingsvision import import_thingsvision
from .imports.torchlens import import_torchlens
from .io.inputs import layers_of
from .io.labels import JOINS
from .options import JACKKNIFE_GROUPS
from .registry import DEFAULT_METRICS, MEASURES, PATHS
from .version import __version__
from .zoo import SUMMARIES, compare_zoo, network_similarity

PROG = "dask-repsim"
#: the formats of ``dask-repsim import``
IMPORTERS = {"arrays": import_arrays, "thingsvision": import_thingsvision,
             "net2brain": import_net2brain, "platonic": import_platonic,
             "brainscore": import_brainscore, "torchlens": import_torchlens,
             "hf_dataset": import_hf_dataset}


class _Parser(argparse.ArgumentParser):
    """argparse, with errors on one line in the package's format."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


def _parser() -> tuple[_Parser, _Parser]:
    parser = _Parser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    cmp = commands.add_parser(
        "compare",
        help="similarity of every layer of A with every layer of B",
        description="Similarity of every layer of A with every layer of B, in one pass over "
        "the data. Prints a table per metric (or JSON with --json). A Zarr group holding "
        "groups and no arrays is a model zoo, one group per network: every layer of every "
        "network is compared with every layer of every other.",
    )
    cmp.add_argument("a", metavar="A", help="Zarr group/array (path or URL) or netCDF file; "
                     "or a zoo: a Zarr group of network groups")
    cmp.add_argument("b", metavar="B", nargs="?", help="the same for the other network (the "
                     "other zoo when A is a zoo); default: compare A with itself")
    cmp.add_argument("--metric", "-m", action="append", metavar="M",
                     help=f"metric to compute, repeatable or comma-separated; one of "
                     f"{', '.join(MEASURES)} (default: {', '.join(DEFAULT_METRICS)})")
    cmp.add_argument("--sample-dims", "-s", action="append", metavar="D",
                     help="dimension(s) indexing samples, repeatable or comma-separated, e.g. "
                     "'sample,height,width' to fold a conv layer's positions into samples "
                     "(default: 'sample', else each array's first dimension)")
    cmp.add_argument("--pool", choices=("mean",),
                     help="'mean': average conv layers' spatial dims away before comparing")
    cmp.add_argument("--resize", action="store_true",
                     help="with spatial positions folded into samples, interpolate smaller "
                     "spatial grids up to the largest one")
    cmp.add_argument("--spatial-dims", action="append", metavar="D",
                     help="spatial dims for --pool and --resize (default: height,width)")
    cmp.add_argument("--join", choices=JOINS, default="exact",
                     help="for layers with sample labels (a 'sample' coordinate): 'exact' "
                     "(default) pairs samples by label and refuses different label sets; "
                     "'inner' compares the samples every layer holds")
    cmp.add_argument("--storage-option", action="append", metavar="KEY=VALUE", default=[],
                     help="fsspec option for zarr URLs, repeatable, e.g. anon=true "
                     "(VALUE is read as JSON when it parses, else as a string)")
    _statistics_options(cmp)
    cmp.add_argument("--scheduler", metavar="ADDRESS",
                     help="address of a running Dask scheduler, e.g. tcp://10.0.0.5:8786 "
                     "(default: local threads)")
    cmp.add_argument("--out", "-o", type=Path, metavar="FILE.nc",
                     help="save the result as netCDF")
    cmp.add_argument("--plot", type=Path, metavar="FILE.png",
                     help="save a heatmap per metric (needs matplotlib); for a zoo, "
                     "FILE_networks.png (the network summaries, a panel per metric) and "
                     "FILE_zoo_<metric>.png (every layer, a panel per pair of networks)")
    cmp.add_argument("--json", action="store_true",
                     help="print JSON {metric: {layer_a: {layer_b: value}}, 'n_samples': n}; "
                     "for a zoo the layers are 'network/layer' and 'network_similarity' holds "
                     "{metric: {network_a: {network_b: value}}}")
    cmp.add_argument("--summary", choices=SUMMARIES, default="max",
                     help="for a zoo, one number per pair of networks: 'max' (default), the "
                     "best value over their layer pairs; 'matched', the mean over the layers "
                     "of the same name (one architecture)")
    cmp.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                     help="show a progress bar on stderr (default: when stderr is a terminal)")
    cmp.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    _import_parser(commands)
    return parser, cmp


def _import_parser(commands: Any) -> None:
    """The ``import`` verb: another tool's activation files into a capture store."""
    imp = commands.add_parser(
        "import", help="write another tool's activation files into a Zarr capture store",
        description="Write another tool's activation files into a Zarr capture store, chunk "
        "by chunk (resumable), for compare. Formats: arrays (.npy/HDF5 files), thingsvision, "
        "net2brain, platonic (platonic-rep .pt), brainscore (brainio netCDF), torchlens, "
        "hf_dataset (a Hugging Face dataset's save_to_disk folder).")
    imp.add_argument("format", metavar="FORMAT", choices=sorted(IMPORTERS),
                     help=f"one of {', '.join(sorted(IMPORTERS))}")
    imp.add_argument("source", metavar="SOURCE", help="the file or folder to import")
    imp.add_argument("store", metavar="STORE", help="the Zarr store to write (path or URL)")
    imp.add_argument("--layer", "-l", action="append", metavar="L",
                     help="layer(s) to import, repeatable or comma-separated (default: all)")
    imp.add_argument("--resume", action="store_true", help="continue an interrupted import")
    imp.add_argument("--overwrite", action="store_true", help="replace an existing store")
    imp.add_argument("--chunk-samples", type=int, metavar="N", help="samples per Zarr chunk")
    imp.add_argument("--dtype", metavar="D", help="storage dtype, e.g. float16")
    imp.add_argument("--preprocessing", metavar="TEXT",
                     help="what was done to the inputs, recorded in the provenance")
    imp.add_argument("--model", metavar="NAME", help="the model's name, for the provenance")
    imp.add_argument("--id-column", metavar="COLUMN",
                     help="hf_dataset only: the column of sample ids (default: positions)")
    imp.add_argument("--storage-option", action="append", metavar="KEY=VALUE", default=[],
                     help="fsspec option for a store URL, repeatable")
    imp.add_argument("--debug", action="store_true", help="show tracebacks of errors")


def _statistics_options(cmp: _Parser) -> None:
    """The options of how the statistics are computed and what else comes with them."""
    cmp.add_argument("--nan-policy", choices=("raise", "omit"), default="raise",
                     help="what to do with samples holding NaN or Inf (default: raise)")
    cmp.add_argument("--method", choices=("auto", *PATHS), default="auto",
                     help="computational path (default: auto, the exact path of least estimated "
                     "arithmetic within the memory budget); see dask_repsim.planning")
    cmp.add_argument("--alpha", type=float,
                     help="partial whitening of the shape_metric metric, in [0, 1] "
                     "(default: 1, rotations only)")
    cmp.add_argument("--rdm", choices=("correlation", "euclidean"),
                     help="dissimilarities of the rsa metric (default: correlation; the "
                     "mahalanobis RDM, with a matrix per layer: Python's compare(rdm_noise=))")
    cmp.add_argument("--rdm-compare", choices=("corr", "cosine", "spearman", "rho-a", "tau-b",
                                               "tau-a", "cosine_cov", "corr_cov"),
                     help="how the rsa metric compares the dissimilarities (default: corr)")
    cmp.add_argument("--k", type=int,
                     help="neighbours per sample of the k-NN measures: mutual_knn, jaccard_knn, "
                     "rank_similarity, joint_rank_jaccard, second_order_cosine, cknna "
                     "(default: 10)")
    cmp.add_argument("--ridge", type=float, help="relative ridge penalty of gulp (default: 0) "
                     "and ridge_predictivity (default: chosen by GCV), >= 0")
    cmp.add_argument("--folds", type=int, help="folds of the *_predictivity metrics (default 10)")
    cmp.add_argument("--components", type=int, help="PLS components of pls_predictivity")
    cmp.add_argument("--sigma", type=float, nargs="+",
                     help="bandwidth(s) of the cka_rbf and cka_laplace metrics, fractions of "
                     "each layer's median distance (default: 0.8); several give <metric>_<sigma>")
    cmp.add_argument("--interval", choices=("jackknife",),
                     help="add a delete-a-group jackknife standard error and interval per cell")
    cmp.add_argument("--level", type=float,
                     help="level of the --interval intervals (default: 0.95)")
    cmp.add_argument("--groups", type=int,
                     help=f"sample groups of the jackknife (default: {JACKKNIFE_GROUPS}; 5 with "
                          "rtd)")
    cmp.add_argument("--permutations", type=int, default=0, metavar="K",
                     help="add a permutation test per cell: p-values from K permutations "
                     "of B's samples within blocks (default: 0, none)")
    cmp.add_argument("--seed", type=int, help="seed of the permutations (default: 0)")
    cmp.add_argument("--null", choices=("gamma",),
                     help="'gamma': p-values from the Gamma approximation of HSIC's null "
                     "(Gretton et al. 2008) instead of permutations (cka, cka_rbf on the Gram "
                     "tiles; approximate)")


def _split(values: Sequence[str] | None) -> list[str]:
    """Flatten repeatable, comma-separated option values."""
    return [v.strip() for value in values or () for v in value.split(",") if v.strip()]


def _storage_options(items: Sequence[str], parser: _Parser) -> dict[str, Any]:
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--storage-option wants KEY=VALUE, not {item!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def _distributed_get(client: Any) -> Callable[..., Any]:
    """A Dask scheduler function that runs on ``client`` and shows its progress on stderr."""
    from distributed import futures_of, progress

    def get(dsk: Any, keys: Any, **kwargs: Any) -> Any:
        packed = client.get(dsk, keys, sync=False, **kwargs)
        futures = futures_of(packed)
        try:
            # the console progress bar writes to stdout, which belongs to the results
            with contextlib.redirect_stdout(sys.stderr):
                progress(futures, multi=False, notebook=False)
            return client.gather(packed)
        finally:
            for future in futures:
                future.release()

    return get


@contextlib.contextmanager
def _progress(client: Any, show: bool | None) -> Iterator[None]:
    if show is False or (show is None and not sys.stderr.isatty()):
        yield
    elif client is not None:
        with dask.config.set(scheduler=_distributed_get(client)):
            yield
    else:
        from dask.diagnostics import ProgressBar

        # asked for explicitly: always shown; automatic: only for work long enough to watch
        with ProgressBar(minimum=0 if show else 1.0, out=sys.stderr):
            yield


def _zoo_networks(path: str, storage_options: dict[str, Any]) -> list[str]:
    """The networks of the zoo store at ``path``: a Zarr group holding groups and no layer of
    its own (as one network, compare() would find nothing in it). Empty for anything else,
    which compare() opens, or names in its errors, as one network."""
    local = "://" not in path
    if local and not os.path.isdir(path):
        return []  # a netCDF file, or a missing path
    kwargs = {"storage_options": storage_options} if storage_options else {}
    try:
        group = zarr.open_group(store=os.path.abspath(path) if local else path, mode="r",
                                **kwargs)
    except FileNotFoundError:
        inner = sorted(c for c in os.listdir(path) if any(os.path.exists(
            os.path.join(path, c, meta)) for meta in ("zarr.json", ".zgroup"))) if local else []
        if inner:
            raise FileNotFoundError(
                f"no zarr group at {path!r}, only the groups {', '.join(inner)} in it: a zoo "
                f"store needs its root group too (zarr.open_group({path!r}, mode='a') creates "
                "it)") from None
        return []
    except (ValueError, TypeError, KeyError, OSError):
        return []  # an array: one layer
    networks = sorted(group.group_keys())
    if not networks and not any(True for _ in group.array_keys()):
        raise ValueError(f"the zarr group at {path!r} is empty: it holds no arrays (the layers "
                         "of a network) and no groups (the networks of a zoo)")
    try:
        layers_of(group)
    except ValueError:
        return networks  # groups, and no layer
    return []


def _zoo(a: str, b: str | None, storage_options: dict[str, Any]) -> bool:
    """Whether A (and B) are zoos; an error when one is and the other is not."""
    zoo_a = _zoo_networks(a, storage_options)
    zoo_b = zoo_a if b is None else _zoo_networks(b, storage_options)
    if bool(zoo_a) != bool(zoo_b):
        path, networks, other = (a, zoo_a, b) if zoo_a else (b, zoo_b, a)
        if "://" not in other and not os.path.exists(other):
            raise FileNotFoundError(f"no zarr array or group at {other!r}")
        raise ValueError(
            f"{path!r} is a zoo (a zarr group of the network groups {', '.join(networks)}) but "
            f"{other!r} is one network: compare two zoos, or two networks such as "
            f"{path.rstrip('/')}/{networks[0]}")
    return bool(zoo_a)


def _options(args: argparse.Namespace, metrics: list[str], sample_dims: list[str] | None,
             storage_options: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of compare() and compare_zoo() from the command's options."""
    return dict(
        metrics=metrics, sample_dims=sample_dims, pool=args.pool, resize=args.resize,
        spatial_dims=tuple(_split(args.spatial_dims)) or None,  # None: pool's/resize's default
        nan_policy=args.nan_policy, storage_options=storage_options,
        interval=args.interval, level=args.level, groups=args.groups,
        permutations=args.permutations, seed=args.seed, null=args.null, method=args.method,
        alpha=args.alpha,
        sigma=args.sigma, rdm=args.rdm, rdm_compare=args.rdm_compare, k=args.k,
        ridge=args.ridge, folds=args.folds, components=args.components, join=args.join,
    )


def _compare(args: argparse.Namespace, parser: _Parser) -> int:
    metrics = _split(args.metric) or list(DEFAULT_METRICS)
    unknown = [m for m in metrics if m not in MEASURES]
    if unknown:
        parser.error(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(MEASURES)}")
    sample_dims = _split(args.sample_dims) or None
    options = _storage_options(args.storage_option, parser)
    # everything that can be checked before the (possibly long) computation is checked first
    zoo = _zoo(args.a, args.b, options)
    check_parent(args.out)
    check_parent(args.plot)
    fmt = plot_format(args.plot) if args.plot is not None else None
    with contextlib.ExitStack() as stack:
        client = None
        if args.scheduler:
            from distributed import Client

            client = stack.enter_context(Client(args.scheduler))
        with _progress(client, args.progress):
            run = compare_zoo if zoo else compare
            result = run(args.a, args.b, **_options(args, metrics, sample_dims, options))
    networks = None
    if zoo:  # one number per pair of networks, for each metric
        networks = {m: network_similarity(result, m, summary=args.summary)
                    for m in result.attrs["metrics"].split(", ")}
    save_result(result, args.out, save_plots(result, networks, args.plot, fmt))
    print(as_json(result, networks) if args.json else table(result, networks))
    return 0


def _import(args: argparse.Namespace, parser: _Parser) -> int:
    extra = {}
    if args.id_column is not None:
        if args.format != "hf_dataset":
            parser.error(f"--id-column applies to the hf_dataset format only, not {args.format} "
                         "(its files say which ids the samples have)")
        extra["id_column"] = args.id_column
    group = IMPORTERS[args.format](
        args.source, args.store, layers=_split(args.layer) or None, resume=args.resume, **extra,
        overwrite=args.overwrite, chunk_samples=args.chunk_samples, dtype=args.dtype,
        preprocessing=args.preprocessing, model=args.model,
        storage_options=_storage_options(args.storage_option, parser) or None)
    layers = [str(n) for n in group.attrs[STATE_ATTR]["layers"]]
    samples = group[SAMPLE].shape[0]
    print(f"{args.store}: {samples} samples, {len(layers)} layers ({', '.join(layers)})")
    return 0


#: the package's options that the command takes as flags of the same name
_FLAGS = ("join", "nan_policy", "pool", "resize", "interval", "null", "method", "groups",
          "permutations", "seed", "level", "sigma", "rdm_compare", "rdm", "folds",
          "components", "ridge", "alpha", "resume", "overwrite", "dtype", "chunk_samples")
_OPTION = re.compile(r"\b(" + "|".join(_FLAGS) + r")=('([^']*)'|True\b|[\w.]+)")


def in_flags(message: str) -> str:
    """An error or warning of the package in the command's words: ``join='inner'`` as
    ``--join inner``, ``resize=True`` as ``--resize``.

    Examples
    --------
    >>> in_flags("pass join='inner' to compare the 40 samples both hold, or resize=True")
    'pass --join inner to compare the 40 samples both hold, or --resize'
    """
    def flag(match: re.Match) -> str:
        name, value = "--" + match[1].replace("_", "-"), match[3] or match[2]
        return name if value == "True" else f"{name} {value}"

    return _OPTION.sub(flag, message)


def _report_warnings(caught: list[warnings.WarningMessage]) -> None:
    seen = set()
    for w in caught:
        text = in_flags(" ".join(str(w.message).split()))
        if text not in seen:
            seen.add(text)
            print(f"{PROG}: warning: {text}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``dask-repsim`` command line; returns the exit status.

    Parameters
    ----------
    argv
        Arguments without the program name; default ``sys.argv[1:]``.

    Returns
    -------
    int
        0 on success, 1 on an error in the data or files, 2 on bad arguments.

    Examples
    --------
    Two networks' activations in Zarr groups (one array per layer), every measure, the result
    saved and drawn::

        $ dask-repsim compare runs/net_a.zarr runs/net_b.zarr --out sim.nc --plot sim.png

    A conv layer's positions folded into samples, on a running cluster, as JSON::

        $ dask-repsim compare a.zarr/conv3 b.zarr/conv3 -m cka -m svcca \\
              --sample-dims sample,height,width --scheduler tcp://10.0.0.5:8786 --json

    A model zoo (one group per network in one store) compared with itself; the plots are
    ``zoo_networks.png`` and ``zoo_zoo_cka.png``::

        $ dask-repsim compare runs/zoo.zarr -m cka --summary matched --out zoo.nc --plot zoo.png

    From Python:

    >>> main(["compare", "does-not-exist.zarr"])  # doctest: +SKIP
    1
    """
    parser, compare_parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version and argument errors
        return exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    debug = args.debug
    with warnings.catch_warnings(record=True) as caught:
        # the package's warnings are part of the answer: shown once each, as one line
        warnings.simplefilter("always", RepsimWarning)
        try:
            if args.command == "import":
                return _import(args, compare_parser)
            return _compare(args, compare_parser)
        except SystemExit as exit_:
            return exit_.code if isinstance(exit_.code, int) else 1
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted", file=sys.stderr)
            return 130
        except (ValueError, TypeError, OSError, ImportError, KeyError) as err:
            if debug:
                traceback.print_exc()
            message = in_flags(" ".join(str(err).split())) or type(err).__name__
            print(f"{PROG}: error: {message}", file=sys.stderr)
            return 1
        finally:
            _report_warnings(caught)


if __name__ == "__main__":
    raise SystemExit(main())
