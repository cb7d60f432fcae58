"""Joining the Ray cluster a command asked for (``--engine ray [--address ADDR]``): shared
by sweeps (``scenarios.commands.raysweep``) and deployments (``comms.raylaunch``).

Without an address, a Ray instance is started on this machine for the command (never a
cluster found by chance on this host) and the caller stops it at the end; with one, the
cluster there is joined. A Ray already initialised in this process (a notebook's, a
test's) is used as it is, but only if the address, when one was given, names the cluster
it is connected to: a command never runs on another cluster than the one asked for.

Ray is an optional dependency (``pip install 'peergrid[cluster]'``): this module imports
it only inside its functions.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
from typing import Any
from urllib.parse import urlsplit

DEFAULT_PORT = 6379
"""The port of a cluster's GCS when an address names none (as ``ray start --head``)."""
CLIENT_PORT = 10001
"""The port of a Ray Client server when a ``ray://`` address names none."""
THIS_MACHINE = "this machine"


class RayUnavailable(ImportError):
    """``--engine ray`` without Ray installed."""


class RayClusterMismatch(RuntimeError):
    """An address that names another cluster than the Ray this process is connected to."""


def require_ray() -> Any:
    """The ``ray`` module, or one line saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RayUnavailable("--engine ray needs Ray: pip install 'peergrid[cluster]'") from None
    return ray


def init_ray(address: str | None = None, **local: Any) -> bool:
    """Ray for a command: True if this call started it or connected to it (the caller
    shuts it down at the end), False if it was initialised already and is used as it is.

    ``address=None`` starts a local instance with ``local`` (``ray.init``'s arguments,
    e.g. ``num_cpus``; the dashboard off and Ray's log at ERROR unless given); an address
    (``HOST:PORT``, ``auto``, ``ray://HOST:PORT``) joins that cluster, ``local`` unused.
    With Ray already initialised, ``address=None`` means that one; an address that does
    not name its cluster raises ``RayClusterMismatch`` naming both. A failed ``ray.init``
    shuts down what it left running."""
    ray = require_ray()
    if ray.is_initialized():
        if address is not None:
            _check_same_cluster(ray, address)
        return False
    try:
        if address is None:  # "local": never a cluster found by chance on this host
            ray.init(address="local", **{"include_dashboard": False,
                                         "logging_level": logging.ERROR, **local})
        else:  # its warnings (authentication, versions) are the user's to read
            ray.init(address=address, logging_level=logging.WARNING)
    except BaseException:
        with contextlib.suppress(Exception):  # the failure to start is the news
            ray.shutdown()
        raise
    return True


def _check_same_cluster(ray: Any, address: str) -> None:
    """Raise unless ``address`` names the cluster the initialised Ray is connected to:
    its GCS address, or for ``ray://`` the Ray Client server it connected through.
    ``auto`` is the cluster ``ray.init(address="auto")`` would join (``RAY_ADDRESS``, the
    latest ``ray start``, else the one running on this machine); ``local``, an instance
    this process started. Host names are resolved, and every address of this machine
    (loopback, its Ray node's, its host name's) is the same host."""
    gcs = ray.get_runtime_context().gcs_address
    client = _client_address(ray)
    current = f"ray://{client} (GCS {gcs})" if client else gcs
    wanted = address
    if address == "local":
        if client is None and _started_here(ray):
            return
        problem = "asks for a Ray instance started by this process, not"
    else:
        if address == "auto":
            try:
                from ray._private.services import canonicalize_bootstrap_address_or_die

                env = os.environ.get("RAY_ADDRESS", "")
                resolved = (env if env.startswith("ray://")  # Ray Client, as ray.init
                            else canonicalize_bootstrap_address_or_die("auto"))
            except Exception as err:  # none found, or several
                raise RayClusterMismatch(
                    f"--address auto: {err} (this process is already connected to the "
                    f"Ray cluster at {current})") from None
            wanted = f"auto ({resolved})"
            address = resolved
        if address.startswith("ray://"):
            same = client is not None and _same_endpoint(address, f"ray://{client}", ray)
        else:
            same = _same_endpoint(address, gcs, ray)
        if same:
            return
        problem = "names another cluster than"
    raise RayClusterMismatch(
        f"--address {wanted} {problem} the one Ray is already connected to in this "
        f"process, at {current}: shut that one down first (ray.shutdown()), or pass no "
        "address to use it")


def _client_address(ray: Any) -> str | None:
    """The server a Ray Client connection goes through (``ray://``), else None."""
    with contextlib.suppress(Exception):
        from ray.util.client import ray as client

        if client.is_connected():
            return str(client.get_context().client_worker._conn_str)
    return None


def _started_here(ray: Any) -> bool:
    """The initialised Ray is a local instance this process started (its head node)."""
    node = getattr(ray._private.worker, "_global_node", None)
    return bool(getattr(node, "head", False))


def _same_endpoint(a: str, b: str, ray: Any) -> bool:
    (host_a, port_a), (host_b, port_b) = _endpoint(a), _endpoint(b)
    if port_a != port_b:
        return False
    here = _this_machine(ray)
    return bool(_hosts(host_a, here) & _hosts(host_b, here))


def _endpoint(address: str) -> tuple[str, int]:
    """Host and port of ``HOST:PORT``, ``[IPv6]:PORT`` or ``ray://HOST:PORT``."""
    rest = address.split("://", 1)[-1]
    parts = urlsplit(f"//{rest}")
    try:
        port = parts.port
    except ValueError:  # not a number: compared as written
        return rest.lower(), -1
    if port is None:
        port = CLIENT_PORT if address.startswith("ray://") else DEFAULT_PORT
    return (parts.hostname or rest).lower(), port


def _this_machine(ray: Any) -> set[str]:
    """This machine's addresses beyond loopback: its Ray node's, its host name's."""
    here: set[str] = set()
    with contextlib.suppress(Exception):
        here.add(ray.util.get_node_ip_address())
    with contextlib.suppress(OSError):
        here |= {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
    return here


def _hosts(host: str, here: set[str]) -> set[str]:
    """The addresses ``host`` resolves to, every one of this machine's as one."""
    try:
        ips = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:  # unresolvable: compared as written
        ips = {host}
    return {THIS_MACHINE if ip in here or _loopback(ip) else ip for ip in ips}


def _loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip.split("%", 1)[0]).is_loopback
    except ValueError:
        return False
