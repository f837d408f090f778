"""Compare two networks' layers on a dask-repsim cluster secured with mutual TLS.

::

    python deploy/tls/client.py tls://scheduler.example.org:8786 deploy/tls/certs \\
        /data/net_a.zarr /data/net_b.zarr --out similarity.nc

The certificate directory is what ``deploy/tls/make-certs.sh`` writes: the cluster's CA
(``ca.pem``) and a client certificate and key signed by it. The scheduler refuses connections
without such a certificate. In your own code, the part to copy is :func:`tls_security`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from distributed import Client
from distributed.security import Security

import dask_repsim


def tls_security(cert_dir: str | Path) -> Security:
    """The client side of the cluster's mutual TLS, from a directory of PEM files.

    ``require_encryption`` makes the client refuse a plain ``tcp://`` address instead of
    falling back to an unencrypted connection.

    Examples
    --------
    >>> security = tls_security("deploy/tls/certs")
    >>> security.require_encryption, security.tls_client_cert.endswith("client.pem")
    (True, True)
    """
    cert_dir = Path(cert_dir)
    return Security(
        tls_ca_file=str(cert_dir / "ca.pem"),
        tls_client_cert=str(cert_dir / "client.pem"),
        tls_client_key=str(cert_dir / "client-key.pem"),
        require_encryption=True,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Run :func:`dask_repsim.compare` on the cluster and print or save the result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scheduler", help="scheduler address, tls://HOST:PORT")
    parser.add_argument("certs", type=Path, help="ca.pem, client.pem and client-key.pem are here")
    parser.add_argument("a", help="zarr group of the first network's layers (path or URL)")
    parser.add_argument("b", nargs="?", help="the same for the second network (default: a)")
    parser.add_argument("--out", type=Path, help="save the result as netCDF here")
    args = parser.parse_args(argv)
    with Client(args.scheduler, security=tls_security(args.certs), timeout="30s"):
        result = dask_repsim.compare(args.a, args.b)
    if args.out:
        result.to_netcdf(args.out)
    print(result)


if __name__ == "__main__":
    main()
