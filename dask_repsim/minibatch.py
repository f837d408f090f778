"""Temporary: replaced by the minibatch module."""
from . import kernels
from .results import Estimate


def minibatch_cka(x, y, *, kernel="linear", sigma=0.8, batch_size=1000, seed=0, level=0.95):
    r = kernels.minibatch_cka(x, y, kernel=kernel, sigma=sigma, batch_size=batch_size,
                              seed=seed, level=level)
    return Estimate(float(r), method="minibatch", approximate="minibatch CKA",
                    ci_low=r.ci_low, ci_high=r.ci_high, level=level, n_batches=r.n_batches)
