"""Dask clusters from settings: a LocalCluster, Dask-Gateway, SLURM or a running scheduler.

minecube never schedules work itself: its cube builds, segmentation and statistics are dask
graphs, run by whatever ``dask.distributed.Client`` is current. :func:`connect` makes that
client from a few settings — the ``cluster:`` section of a run configuration, or the CLI's
``--cluster`` options — through the cluster managers the Pangeo ecosystem uses
(``dask_gateway.Gateway().new_cluster()``, ``dask_jobqueue.SLURMCluster``), scales the
cluster (a fixed size or ``adapt``), prints its dashboard link, and closes what it created.

Workers of a Dask-Gateway cluster share no disk with the client: :func:`require_reachable`
refuses, before any work, a run whose stores or checkpoint are paths only the client sees.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
from collections.abc import Iterator, Mapping
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from minecube.errors import MinecubeError, MissingDependencyError
from minecube.store import _is_url

__all__ = [
    "AdaptSettings",
    "ClusterError",
    "ClusterSettings",
    "connect",
    "require_reachable",
    "shares_disk",
]

log = logging.getLogger("minecube")

Kind = Literal["local", "gateway", "slurm", "address"]


class ClusterError(MinecubeError, ValueError):
    """A cluster could not be made or used as asked; the message says why and what to change."""


class AdaptSettings(BaseModel):
    """Adaptive scaling between ``minimum`` and ``maximum`` workers (``cluster.adapt``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    minimum: int = Field(0, ge=0, description="Fewest workers.")
    maximum: int = Field(ge=1, description="Most workers.")

    @model_validator(mode="after")
    def _ordered(self) -> AdaptSettings:
        if self.minimum > self.maximum:
            raise ValueError(f"minimum {self.minimum} is above maximum {self.maximum}")
        return self


class ClusterSettings(BaseModel):
    """Where a run computes: which cluster manager, how many workers, and its own options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Kind = Field(
        "local",
        description="local (a LocalCluster here), gateway (Dask-Gateway), slurm "
        "(dask-jobqueue's SLURMCluster) or address (a running scheduler).",
    )
    workers: int | None = Field(
        None, ge=1, description="A fixed number of workers (local default: one per core)."
    )
    adapt: AdaptSettings | None = Field(None, description="Adaptive scaling instead of workers.")
    address: str | None = Field(
        None,
        description="kind address: the scheduler, tcp://HOST:8786; kind gateway: the "
        "gateway's URL (default: dask's gateway.address setting, as a Pangeo hub sets it).",
    )
    proxy_address: str | None = Field(
        None, description="kind gateway: the scheduler proxy, when not at the gateway's URL."
    )
    auth: str | None = Field(
        None, description="kind gateway: basic, kerberos or jupyterhub (default: dask's config)."
    )
    options: dict[str, Any] = Field(
        {},
        description="Passed as they are to the manager: Gateway.new_cluster(**options) "
        "(worker_cores, worker_memory, image, environment…), SLURMCluster(**options) (cores, "
        "memory, walltime, queue, account, job_extra_directives, worker_extra_args…) or "
        "LocalCluster(**options).",
    )
    shared_filesystem: bool | None = Field(
        None,
        description="Whether the workers see this machine's disk (default: yes for local and "
        "slurm, no for gateway; for address, yes when every worker runs on this machine).",
    )
    timeout: float = Field(300, gt=0, description="Seconds to wait for the first workers to join.")
    connect_timeout: float = Field(
        20, gt=0, description="kind address: seconds to wait for the scheduler to answer."
    )

    @model_validator(mode="after")
    def _consistent(self) -> ClusterSettings:
        if self.workers is not None and self.adapt is not None:
            raise ValueError("give workers (a fixed size) or adapt (a range), not both")
        _check_size(self)
        if self.kind == "address":
            if not self.address:
                raise ValueError("kind address needs address: the scheduler, tcp://HOST:8786")
            if urlparse(self.address).scheme in ("http", "https"):
                raise ValueError(
                    f"address {self.address!r} is a web address (a dashboard?); a scheduler "
                    "listens at tcp://HOST:8786"
                )
            if self.workers is not None or self.adapt is not None or self.options:
                raise ValueError(
                    "kind address uses a running scheduler as it is: drop workers, adapt and "
                    "options (scale it where it was started)"
                )
        if self.kind in ("gateway", "slurm") and self.workers is None and self.adapt is None:
            raise ValueError(
                f"kind {self.kind} needs workers: N (a fixed size) or adapt: {{minimum: M, "
                "maximum: N}}"
            )
        _check_options(self.kind, self.options)
        return self


MAX_WORKERS = 5000
"""Most workers a cluster may be asked for (a local one: four per core)."""


def _check_size(settings: ClusterSettings) -> None:
    """Refuse a worker count no machine or cluster could start (it would hang, not fail)."""
    most = settings.adapt.maximum if settings.adapt is not None else settings.workers
    if most is None:
        return
    cores = os.cpu_count() or 1
    cap = 4 * cores if settings.kind == "local" else MAX_WORKERS
    if most > cap:
        where = f"this machine has {cores} cores" if settings.kind == "local" else "the cap"
        raise ValueError(
            f"{most} workers is more than a {settings.kind} cluster can start ({where}: at "
            f"most {cap}); ask for fewer"
            + (", or run on a cluster (kind slurm or gateway)" if settings.kind == "local" else "")
        )


def _manager_options(kind: str) -> set[str] | None:
    """The keyword options a cluster manager takes; ``None`` where they are the server's."""
    import inspect

    def named(*callables) -> set[str]:
        return {
            n
            for c in callables
            for n, p in inspect.signature(c).parameters.items()
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        }

    if kind == "local":
        from distributed import LocalCluster, Nanny, Worker

        return named(LocalCluster, Nanny, Worker)  # the rest go to each worker
    if kind == "slurm":
        try:
            from dask_jobqueue import SLURMCluster
            from dask_jobqueue.core import Job
            from dask_jobqueue.slurm import SLURMJob
        except ImportError:
            return None  # said when the cluster is made
        return named(SLURMCluster, SLURMJob, Job)
    return None  # a gateway's options are its server's: it says which it lacks


def _check_options(kind: str, options: Mapping[str, Any]) -> None:
    import difflib

    known = _manager_options(kind) if options else None
    unknown = sorted(set(options) - known) if known is not None else []
    if unknown:
        hints = [
            f"{k!r}" + (f" (did you mean {near[0]!r}?)" if (near := difflib.get_close_matches(
                k, sorted(known), n=1)) else "")
            for k in unknown
        ]  # fmt: skip
        raise ValueError(
            f"options {', '.join(hints)} are not options of the {kind} cluster manager; "
            f"it takes {sorted(known)}"
        )


def _settings(settings: ClusterSettings | Mapping | None, kwargs: Mapping) -> ClusterSettings:
    if isinstance(settings, ClusterSettings) and not kwargs:
        return settings
    values = (
        settings.model_dump() if isinstance(settings, ClusterSettings) else dict(settings or {})
    )
    try:
        return ClusterSettings.model_validate({**values, **kwargs})
    except ValidationError as e:
        lines = [
            f"{'.'.join(map(str, err['loc'])) or 'cluster'}: "
            + err["msg"].removeprefix("Value error, ")
            for err in e.errors()
        ]
        raise ClusterError("cluster settings: " + "; ".join(lines)) from None


def _import(module: str, extra: str = "cluster"):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(
            f"{module} is not installed; pip install 'minecube[{extra}]' (it brings "
            "dask-gateway and dask-jobqueue)"
        ) from e


@contextlib.contextmanager
def connect(settings: ClusterSettings | Mapping | None = None, /, **kwargs) -> Iterator[Any]:
    """A ``dask.distributed.Client`` on the cluster the settings describe, current within a
    ``with`` block; the cluster minecube created is closed at its end (its workers stopped,
    its SLURM jobs cancelled), a running scheduler (``kind="address"``) is left running.

    Parameters
    ----------
    settings
        :class:`ClusterSettings`, or a mapping of them (a run configuration's ``cluster:``).
    **kwargs
        Settings given as keywords, over those of ``settings``.

    Yields
    ------
    distributed.Client
        Connected, with its workers joined (``workers``, or ``adapt.minimum``: none for an
        adaptive cluster from 0, which starts workers when work comes).

    Raises
    ------
    ClusterError
        Invalid settings, or no worker joined within ``timeout`` seconds (the message says
        where to look: the SLURM queue, the gateway's logs).

    Examples
    --------
    >>> from minecube.cluster import connect
    >>> with connect(kind="local", workers=2, options={"processes": False}) as client:
    ...     len(client.scheduler_info()["workers"])
    2

    On a Pangeo hub, ``connect(kind="gateway", workers=20, options={"worker_cores": 4})``;
    at an HPC centre, ``connect(kind="slurm", adapt={"minimum": 1, "maximum": 50},
    options={"cores": 8, "memory": "32GB", "walltime": "02:00:00"})``.
    """
    from distributed import Client

    settings = _settings(settings, kwargs)
    with contextlib.ExitStack() as stack:
        cluster = None
        if settings.kind == "address":
            client = stack.enter_context(_reach(settings))
        else:
            cluster = _new_cluster(settings)
            if settings.kind == "gateway":  # runs after the cluster is closed
                stack.callback(_forget_gateway_loop, cluster)
            cluster = stack.enter_context(cluster)
            # a gateway's client needs the cluster's TLS credentials, which get_client passes
            client = stack.enter_context(
                cluster.get_client(set_as_default=False)
                if settings.kind == "gateway"
                else Client(cluster, set_as_default=False)
            )
        wanted = _scale(cluster, settings) if cluster is not None else 1
        try:  # adapt from 0 starts workers when work comes: nothing to wait for
            if wanted:
                client.wait_for_workers(wanted, timeout=settings.timeout)
        except TimeoutError:
            raise ClusterError(
                f"{'no worker' if wanted == 1 else f'fewer than {wanted} workers'} joined the "
                f"{settings.kind} cluster within {settings.timeout:g} s; "
                + _where_to_look(settings.kind)
            ) from None
        log.info(f"dask: {client.scheduler.address} ({_size(settings)})")
        if client.dashboard_link:
            log.info(f"dask dashboard: {client.dashboard_link}")
        with client.as_current():
            yield client


def _reach(settings: ClusterSettings):
    """A client of the scheduler at ``settings.address``, or a ClusterError saying why not.

    dask bounds the TCP connect by ``timeout`` but not the handshake after it: a server that
    accepts the connection and says nothing (a web server waiting for a request line) would
    hang ``Client`` for ever. So a tcp:// scheduler is first greeted with a bounded handshake.
    """
    from distributed import Client

    address, wait = settings.address, min(settings.connect_timeout, settings.timeout)
    log.info(f"dask: connecting to {address} (up to {wait:g} s)")
    try:
        if address.startswith("tcp://") or "://" not in address:
            _greet(address, wait)
        return Client(address, timeout=wait)
    except _Silent:
        why = f"accepts connections but did not greet as a dask scheduler within {wait:g} s"
        raise _not_dask(address, why) from None
    except (OSError, TimeoutError) as e:
        raise ClusterError(
            f"no dask scheduler answers at {address} within {wait:g} s "
            f"({type(e).__name__}); start one (`dask scheduler`), fix the address or "
            "raise cluster.connect_timeout"
        ) from None
    except (MemoryError, ValueError, TypeError) as e:  # garbage read as a frame length
        why = f"answers, but not as a dask scheduler ({type(e).__name__})"
        raise _not_dask(address, why) from None


def _greet(address: str, wait: float) -> None:
    """Connect and shake hands with the scheduler at ``address``, all within ``wait`` seconds.

    Runs on its own event loop in a thread, so it works inside Jupyter's running loop too.
    """
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from distributed.comm import connect as open_comm

    async def shake() -> None:
        try:  # open_comm gives up on a silent TCP connect after ``wait`` with an OSError
            comm = await asyncio.wait_for(open_comm(address, timeout=wait), wait + 1)
        except TimeoutError:  # connected, but the handshake never came
            raise _Silent from None
        comm.abort()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, shake()).result()


class _Silent(Exception):
    """The server took the connection and sent nothing back."""


def _not_dask(address: str, why: str) -> ClusterError:
    return ClusterError(
        f"{address} {why}; is it another server (a dashboard, a web server)? "
        "A scheduler listens at tcp://HOST:8786"
    )


def _new_cluster(settings: ClusterSettings):
    if settings.kind == "local":
        from distributed import LocalCluster

        options = {"threads_per_worker": 1, "dashboard_address": "127.0.0.1:0"}
        n = settings.adapt.minimum if settings.adapt else settings.workers
        if n is not None:
            options["n_workers"] = n
        return LocalCluster(**{**options, **settings.options})
    if settings.kind == "gateway":
        gateway = _import("dask_gateway")
        try:
            return gateway.GatewayCluster(
                address=settings.address, proxy_address=settings.proxy_address,
                auth=settings.auth, shutdown_on_close=True, **settings.options,
            )  # fmt: skip
        except ValueError as e:  # no address configured, or an option the gateway lacks
            raise ClusterError(f"Dask-Gateway: {e}") from None
        except OSError as e:
            raise ClusterError(
                f"no Dask-Gateway answers at {settings.address or 'dask config gateway.address'}"
                f": {e}; check cluster.address (the gateway's URL)"
            ) from None
    jobqueue = _import("dask_jobqueue")
    try:
        return jobqueue.SLURMCluster(**settings.options)
    except ValueError as e:  # e.g. no cores or memory
        raise ClusterError(f"SLURMCluster: {e}") from None


def _forget_gateway_loop(cluster) -> None:
    """dask-gateway 2026.3's ``Gateway.__del__`` closes a closed gateway again and raises
    ("Accessing the loop property while the loop is not running") as it is collected; without
    its stopped loop runner it has nothing to close."""
    with contextlib.suppress(AttributeError):
        del cluster.gateway._loop_runner


def _scale(cluster, settings: ClusterSettings) -> int:
    """Scale ``cluster`` as asked; the number of workers to wait for."""
    if settings.adapt is not None:
        cluster.adapt(minimum=settings.adapt.minimum, maximum=settings.adapt.maximum)
        return settings.adapt.minimum
    if settings.workers is not None:
        cluster.scale(settings.workers)
        return settings.workers
    return 1


def _size(settings: ClusterSettings) -> str:
    if settings.kind == "address":
        return "a running scheduler"
    if settings.adapt is not None:
        size = f"{settings.adapt.minimum}–{settings.adapt.maximum} workers, adaptive"
    else:
        size = f"{settings.workers} workers" if settings.workers else "a worker per core"
    return f"{settings.kind} cluster, {size}"


def _where_to_look(kind: str) -> str:
    return {
        "slurm": "see the queue (`squeue --me`: jobs pending for resources?) and the jobs' "
        "output (options.log_directory)",
        "gateway": "see the gateway's logs, and whether the cluster options fit its limits",
        "local": "the machine may lack the memory asked for",
        "address": "start workers against the scheduler (`dask worker ADDRESS`)",
    }[kind]


# -- which paths the workers can read -----------------------------------------------------------


def _this_machine() -> set[str]:
    """This machine's names and the addresses of its network interfaces."""
    import psutil  # a dependency of distributed

    names = {"localhost", socket.gethostname(), socket.getfqdn()}
    for addresses in psutil.net_if_addrs().values():
        names |= {a.address.split("%")[0] for a in addresses}
    return names


def _on_this_machine(address: str) -> bool:
    host = urlparse(address).hostname or address.rsplit(":", 1)[0]
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_loopback:
            return True
    return host in _this_machine()


def shares_disk(settings: ClusterSettings | None = None, *, client=None) -> bool | None:
    """Whether the workers see this machine's files: ``shared_filesystem`` when set; yes for a
    local cluster and SLURM (an HPC centre's shared file system), no for Dask-Gateway; for a
    running scheduler (or a ``client``), yes when every worker runs on this machine. ``None``
    when it cannot be told yet (a scheduler not yet connected to)."""
    if settings is not None and settings.shared_filesystem is not None:
        return settings.shared_filesystem
    kind = settings.kind if settings is not None else "address"
    if kind in ("local", "slurm"):
        return True
    if kind == "gateway":
        return False
    if client is None:
        return None
    workers = client.scheduler_info(n_workers=-1)["workers"]
    return all(_on_this_machine(address) for address in workers)


def _is_local(path: str | os.PathLike) -> bool:
    return not _is_url(path) or os.fspath(path).startswith("file://")


def require_reachable(
    paths: Mapping[str, str | os.PathLike | None],
    *,
    settings: ClusterSettings | None = None,
    client=None,
) -> None:
    """Refuse, before any work, paths on this machine that workers without a shared disk must
    read or write.

    Parameters
    ----------
    paths
        What each path is (``"cube store"``, ``"checkpoint"``…) → the path or URL.
    settings, client
        The cluster, as for :func:`shares_disk`.

    Raises
    ------
    ClusterError
        Naming each local path and the fix: an fsspec URL (``s3://bucket/…``) the workers can
        reach, or ``shared_filesystem: true`` where they do share this disk.

    Examples
    --------
    >>> gateway = ClusterSettings(kind="gateway", workers=4)
    >>> require_reachable({"cube store": "s3://bucket/cubes.zarr"}, settings=gateway)
    >>> require_reachable({"cube store": "run/cubes.zarr"}, settings=gateway)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    minecube.cluster.ClusterError: the workers of this gateway cluster share no disk ...
    """
    if shares_disk(settings, client=client) is not False:
        return
    local = {what: os.fspath(p) for what, p in paths.items() if p is not None and _is_local(p)}
    if not local:
        return
    kind = settings.kind if settings is not None else "address"
    listed = ", ".join(f"the {what} is a path on it ({path!r})" for what, path in local.items())
    example = next(iter(local.values())).removeprefix("file://").lstrip("/")
    raise ClusterError(
        f"the workers of this {kind} cluster share no disk with this machine, but {listed}; "
        f"put {'it' if len(local) == 1 else 'them'} in object storage the workers reach (an "
        f"fsspec URL such as s3://bucket/{example}), or set cluster.shared_filesystem: true "
        "if they do see this disk"
    )
