"""dask-gateway-server configuration for the tests: a real gateway on loopback whose local-process
backend starts each cluster's scheduler and workers as processes of this machine, with the
cluster options a Pangeo hub commonly offers (worker cores and memory, environment variables).

The test fixture passes the ports and the folder through MINECUBE_GATEWAY_* variables.
"""

import os
import sys

from dask_gateway_server.options import Float, Integer, Mapping, Options

c = get_config()  # noqa: F821 (traitlets' config loader defines it)

c.DaskGateway.address = os.environ["MINECUBE_GATEWAY_ADDRESS"]
c.Proxy.address = os.environ["MINECUBE_GATEWAY_PROXY"]
c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
c.DaskGateway.db_url = "sqlite:///:memory:"
c.LocalBackend.clusters_directory = os.environ["MINECUBE_GATEWAY_DIR"]
# dask >= 2025 has no dask-scheduler / dask-worker scripts: run the modules with this Python
c.LocalClusterConfig.scheduler_cmd = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
c.LocalClusterConfig.worker_cmd = [sys.executable, "-m", "distributed.cli.dask_worker"]
c.LocalClusterConfig.worker_threads = 1


def _options(options):
    return {
        "worker_cores": options.worker_cores,
        "worker_memory": int(options.worker_memory * 2**30),
        "environment": dict(options.environment),
    }


c.Backend.cluster_options = Options(
    Integer("worker_cores", default=1, min=1, max=2, label="Worker cores"),
    Float("worker_memory", default=2, min=0.5, max=8, label="Worker memory, GiB"),
    Mapping("environment", default={}, label="Environment variables"),
    handler=_options,
)
