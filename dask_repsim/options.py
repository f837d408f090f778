"""The options every public function shares: one place that resolves, checks and documents them.

A silent no-op is a bug: an option that the chosen path or measure does not use raises an error
that says so (:func:`reject_unused`). Options whose default is ``None`` are "not given"; the
value used when they apply is in :data:`DEFAULTS`.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .exceptions import RepsimWarning
from .io.layouts import SampleDims
from .registry import JACKKNIFE_GROUPS, MEASURES, PATHS, supports

__all__ = ["DEFAULTS", "Options", "SampleDims", "document", "reject_unused"]

#: fewer permutations than this cannot give a p-value of 0.05 or less: a warning says so
FEWEST_PERMUTATIONS = 19
#: what options left at ``None`` mean where they apply
DEFAULTS = {"level": 0.95, "groups": JACKKNIFE_GROUPS, "seed": 0, "sigma": 0.8,
            "batch_size": 1000}

#: parameter documentation shared by the public functions (numpydoc), filled in by
#: :func:`document`
PARAMETERS = {
    "inputs": """x, y
        Activations, samples along the first axis (or the ``sample_dims`` of a DataArray):
        numpy, dask or zarr arrays, zarr paths or URLs, or xarray DataArrays. Plain arrays are
        paired by position; DataArrays (and captured groups) with a sample coordinate are
        paired by label.
    sample_dims
        For DataArrays, the dims that index samples (e.g. ``("sample", "height", "width")``
        to fold a conv layer's positions into samples); all others are features.
    storage_options
        Passed to fsspec when an input is a zarr URL.
    nan_policy
        ``"raise"`` (default): NaN or Inf is an error naming the input and the first bad
        sample. ``"omit"``: leave out, for each pair of layers, the samples where either
        has NaN or Inf (co-moment path only).
    join
        For inputs with sample labels: ``"exact"`` (default) pairs them by label and refuses
        different label sets; ``"inner"`` compares the samples both hold.""",
    "uncertainty": """interval, level, groups
        ``interval="jackknife"``: also a delete-a-group jackknife standard error and a
        ``level`` (default 0.95) interval over ``groups`` (at least 2) contiguous ranges of
        samples, from the same pass; ``level`` and ``groups`` without ``interval`` are an
        error. Default groups: 20 (5 with RTD, whose jackknife overstates its variance with
        small groups; a grid takes the fewest of its measures').
        Co-moment, QR, Gram, tiled and ``sample_blocks`` paths, for the measures that have one
        there (the table of the guide's "Intervals and permutation tests").
    permutations, seed
        ``permutations=K``: also a permutation test from the same pass, the measure under K
        random permutations of y's samples within blocks of consecutive samples (seeded by
        ``seed``, default 0), giving ``.pvalue``, ``.null_mean``, ``.null_std`` and
        ``.null``. Assumes samples are exchangeable within a block. Co-moment, Gram and
        ``sample_blocks`` paths, for every measure of two paired layers there (the
        cross-validated predictivities permute within each fold); the same seed gives the
        same permutations on all.""",
    "gamma": """null
        ``null="gamma"``: instead of permutations, the p-value of the Gamma approximation of
        HSIC's null distribution (Gretton et al. 2008), with ``.null_method`` ``"gamma"`` and
        the null's ``.null_mean`` and ``.null_std``: cheap (one more pass over the saved
        matrices) and approximate. Linear and RBF CKA on the Gram (sample-space) path, which
        ``method="auto"`` then takes.""",
    "method": """method
        ``"auto"`` (default): the co-moments. ``"covariance"``: the same, named.
        ``"qr"``: from a tall-skinny QR of the centred data (Demmel et al. 2012), which does
        not square the condition number: use it for ill-conditioned activations, where the
        co-moment path loses digits. See :mod:`dask_repsim.registry` for every path.""",
    "returns": """Estimate
        A float. With ``interval`` also ``.stderr``, ``.ci_centre`` (the bias-corrected
        estimate the interval is centred on), ``.ci_low``, ``.ci_high``, ``.level``,
        ``.n_groups``; with ``permutations`` ``.pvalue``, ``.null_mean``, ``.null_std``,
        ``.null``; ``.method`` is the path that ran (:class:`dask_repsim.results.Estimate`).""",
}


def document(function: Any) -> Any:
    """Fill the shared parameter documentation into ``function``'s docstring."""
    function.__doc__ = function.__doc__.format(**PARAMETERS)
    return function


@dataclass(frozen=True)
class Options:
    """The input, interval and permutation options of one call, resolved."""

    sample_dims: SampleDims = None
    storage_options: Mapping[str, Any] | None = None
    nan_policy: str = "raise"
    interval: str | None = None
    level: float | None = None
    groups: int | None = None
    permutations: int = 0
    seed: int | None = None
    null: str | None = None

    def __post_init__(self) -> None:
        if self.nan_policy not in ("raise", "omit"):
            raise ValueError(f"nan_policy must be 'raise' or 'omit', not {self.nan_policy!r}")
        if self.interval not in (None, "jackknife"):
            raise ValueError(f"interval must be None or 'jackknife', not {self.interval!r}")
        p = self.permutations
        if isinstance(p, bool) or not isinstance(p, int | np.integer):
            raise TypeError(f"permutations must be an int, not {p!r}")
        if p < 0:
            raise ValueError(f"permutations must be >= 0, not {p}")
        if self.level is not None and not 0 < self.level < 1:
            raise ValueError(f"level must be between 0 and 1, not {self.level}")
        if self.groups is not None and not (isinstance(self.groups, int | np.integer)
                                            and not isinstance(self.groups, bool)
                                            and self.groups >= 2):
            raise ValueError(f"groups must be an int >= 2 (a jackknife leaves out one group "
                             f"of samples at a time), not {self.groups!r}")
        if self.null not in (None, "gamma"):
            raise ValueError(f"null must be None (a permutation test with permutations=K) or "
                             f"'gamma', not {self.null!r}")
        if self.null == "gamma" and p:
            raise ValueError("null='gamma' approximates the null instead of permuting: give "
                             "it or permutations=, not both")
        if 0 < p < FEWEST_PERMUTATIONS:
            warnings.warn(f"permutations={p}: the smallest p-value {p} permutations can give "
                          f"is 1/{p + 1} = {1 / (p + 1):.3g}, so no test here can reject at "
                          f"the 0.05 level; use at least {FEWEST_PERMUTATIONS} (999 for a "
                          "grid's corrected p-values)", RepsimWarning, stacklevel=3)

    def get(self, name: str) -> Any:
        """The value of option ``name``, its default when not given."""
        value = getattr(self, name)
        return DEFAULTS[name] if value is None else value

    def for_measures(self, measures: Sequence[str], least: int = 2) -> Options:
        """These options for a call of ``measures``: with an interval and no ``groups=`` given,
        the fewest of the measures' default groups
        (:attr:`~dask_repsim.registry.Measure.jackknife_groups`: one number for every measure
        of a grid), and at least ``least`` (the folds of a cross-validated measure); otherwise
        unchanged.

        Examples
        --------
        >>> asked = Options(interval="jackknife")
        >>> asked.for_measures(["cka"]).groups, asked.for_measures(["cka", "rtd"]).groups
        (20, 5)
        >>> given = Options(interval="jackknife", groups=7)
        >>> asked.for_measures(["rtd"], least=10).groups, given.for_measures(["rtd"]).groups
        (10, 7)
        """
        if not self.interval or self.groups is not None:
            return self
        groups = min(MEASURES[m].jackknife_groups for m in measures)
        out = copy.copy(self)  # not a new Options: its checks and warnings ran once
        object.__setattr__(out, "groups", max(groups, least))
        return out

    @property
    def groups_used(self) -> int:
        """Sample groups of the pass: 1 without an interval."""
        return self.get("groups") if self.interval else 1


def reject_unused(path: str, options: Options, *, level_used: bool = False,
                  seed_used: bool = False, measures: Sequence[str] = ()) -> None:
    """An error for each option the chosen path does not support or use: the one check of
    options that every entry point (pairwise functions, ``compare``) makes, on the path that
    runs (:func:`dask_repsim.runners.run_cells`).

    ``level_used``/``seed_used``: the measure itself uses ``level`` (minibatch intervals) or
    ``seed`` (minibatch order, RBF median subsample) on this path. ``measures``: what the call
    computes, named in the errors of options its path cannot have.
    """
    info = PATHS[path]
    unsupported = {
        "interval=": options.interval is not None and not info.interval,
        "permutations=": bool(options.permutations) and not info.permutations,
        "nan_policy='omit'": options.nan_policy != "raise" and not info.nan_omit,
        "null='gamma'": options.null is not None and not info.gamma,
    }
    bad = [name for name, yes in unsupported.items() if yes]
    lacking = [m for m in dict.fromkeys(measures) if options.interval and info.interval
               and not supports(m, path, "interval")]
    if lacking and not bad:
        raise _off_path("interval=", path, lacking,
                        "offers jackknife intervals of other measures, not of these")
    lacking = [m for m in dict.fromkeys(measures) if options.permutations and info.permutations
               and not supports(m, path, "permutations")]
    if lacking and not bad:
        raise _off_path("permutations=", path, lacking,
                        "offers permutation tests of other measures, not of these")
    lacking = [m for m in dict.fromkeys(measures) if options.null and info.gamma
               and not supports(m, path, "gamma")]
    if lacking and not bad:
        raise _off_path("null='gamma'", path, lacking, "offers the Gamma approximation of "
                        "the null of other measures (those of the biased HSIC), not of these")
    if bad:
        needs = [f for f, want in (("interval", options.interval),
                                   ("permutations", options.permutations),
                                   ("nan_omit", options.nan_policy != "raise"),
                                   ("gamma", options.null)) if want]
        able = [p for p, i in PATHS.items() if all(getattr(i, f) for f in needs)
                and all(p in MEASURES[m].paths and supports(m, p, f)
                        for m in measures for f in needs)]
        raise ValueError(
            f"{', '.join(bad)} {'is' if len(bad) == 1 else 'are'} not available on the "
            f"{path!r} path; paths that support {'it' if len(bad) == 1 else 'them'}: "
            f"{', '.join(able) or 'none'}"
        )
    for name in ("level", "groups"):
        if getattr(options, name) is not None and options.interval is None and not (
                name == "level" and level_used):
            if not info.interval:
                raise _off_path(f"{name}=", path, measures, "has no jackknife intervals")
            if measures and not any(supports(m, path, "interval") for m in measures):
                raise _off_path(f"{name}=", path, measures, "offers no jackknife interval of "
                                "them")
            raise ValueError(f"{name}= applies to intervals only: pass interval='jackknife' "
                             "or leave it out")
    if options.seed is not None and not options.permutations and not seed_used:
        if not info.permutations:
            raise _off_path("seed=", path, measures,
                            "has no permutation tests and nothing random to seed")
        if measures and not any(supports(m, path, "permutations") for m in measures):
            raise _off_path("seed=", path, measures, "offers no permutation test of them and "
                            "nothing random to seed")
        raise ValueError("seed= is used by permutation tests (permutations=K) and random "
                         "estimators only; nothing here is random")


def _off_path(option: str, path: str, measures: Sequence[str], lacking: str) -> ValueError:
    """The error of an option that only something ``path`` lacks would use (``lacking``: what
    the path ``has no ...``)."""
    names = ", ".join(dict.fromkeys(measures))
    where = f" for {names}, computed on the {path!r} path," if names else \
        f" on the {path!r} path,"
    return ValueError(f"{option} is not available{where} which {lacking}; leave it out")
