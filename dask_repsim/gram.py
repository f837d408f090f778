"""Temporary: replaced by the Gram-block module."""
from .kernels import gram_cka_values
from .kernels import rbf_cka as _rbf
from .results import Estimate


def cka_values(x, y, debiased, *, means=None, block_rows=None):
    return gram_cka_values(x, y, debiased, block_rows=block_rows)


def rbf_cka(x, y, sigma, *, debiased=False, seed=0, means=None):
    r = _rbf(x, y, sigma, debiased=debiased, seed=seed)
    return Estimate(float(r), method="gram", median=r.median, median_exact=r.median_exact)
