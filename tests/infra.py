"""Real Redis deployments for the outage, Sentinel and Cluster tests.

Each class starts real ``redis-server`` processes on free loopback ports, each in its own
temporary directory, waits for them by polling with a deadline, and ends them by PID. The
session's own ``redis_server`` (tests/conftest.py) is a ``Server`` too; these are others.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import Any

import redis


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def poll(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """``predicate()`` once it is truthy; AssertionError naming ``what`` after ``timeout`` s.
    Redis errors while polling count as "not yet" (servers are starting or failing over)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except (redis.RedisError, OSError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(interval)


def _exe(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed; run scripts/test (it installs Redis)")
    return path


class Server:
    """One ``redis-server`` (or sentinel) process; it can be killed and started again on the
    same port and directory."""

    def __init__(self, *extra: str, conf: str | None = None, port: int | None = None) -> None:
        self.dir = tempfile.mkdtemp(prefix="redisq-infra-")
        self.port = port or free_port()
        self.extra = extra
        self.conf = conf
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def client(self, **kwargs: Any) -> redis.Redis:
        return redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=2,
                           **kwargs)

    def start(self, timeout: float = 10.0) -> None:
        args = [_exe("redis-server")]
        if self.conf is not None:
            path = os.path.join(self.dir, "server.conf")
            with open(path, "w") as f:
                f.write(self.conf)
            args += [path]
        args += ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
                 "--logfile", os.path.join(self.dir, "log"), *self.extra]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = self.client()
        try:
            poll(lambda: self.proc is not None and self.proc.poll() is None and client.ping(),
                 timeout, f"redis-server on port {self.port} answering PING")
        finally:
            client.close()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: the server vanishes without saving or saying goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)  # in case a test stopped it
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


SENTINEL_CONF = """\
sentinel monitor {name} 127.0.0.1 {master_port} 2
sentinel down-after-milliseconds {name} 1000
sentinel failover-timeout {name} 5000
sentinel parallel-syncs {name} 1
"""


class SentinelSet:
    """A master, one replica and three sentinels (quorum 2) watching them as ``name``."""

    def __init__(self, name: str = "redisq-test") -> None:
        self.name = name
        plain = ("--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0")
        self.master = Server(*plain)
        self.replica = Server(*plain, "--replicaof", "127.0.0.1", str(self.master.port))
        self.sentinels: list[Server] = []

    def start(self) -> None:
        self.master.start()
        self.replica.start()
        conf = SENTINEL_CONF.format(name=self.name, master_port=self.master.port)
        self.sentinels = [Server("--sentinel", conf=conf) for _ in range(3)]
        for s in self.sentinels:
            s.start()
        m = self.master.client()
        poll(lambda: m.info("replication")["connected_slaves"] == 1, 15,
             "replica connected to the master")
        rep = self.replica.client()
        poll(lambda: rep.info("replication")["master_link_status"] == "up", 15,
             "replica in sync")
        # Each sentinel must know the replica (to promote it) and the two other sentinels
        # (to be elected leader of a failover): they learn both from the master, every ~2 s.
        for s in self.sentinels:
            c = s.client()
            poll(lambda c=c: (len(c.execute_command("SENTINEL", "REPLICAS", self.name)) == 1
                              and len(c.execute_command("SENTINEL", "SENTINELS", self.name))
                              == 2), 20, f"sentinel {s.port} discovering its peers")
            c.close()
        m.close()
        rep.close()

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [s.address for s in self.sentinels]

    def master_port(self) -> int | None:
        """The master's port according to a sentinel that answers."""
        for s in self.sentinels:
            try:
                c = s.client()
                host_port = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name)
                c.close()
                return int(host_port[1])
            except redis.RedisError:
                continue
        return None

    def wait_promoted(self, server: Server, timeout: float = 30) -> None:
        """Until every sentinel names ``server`` the master and it accepts writes."""
        def done() -> bool:
            for s in self.sentinels:
                c = s.client()
                addr = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name)
                c.close()
                if int(addr[1]) != server.port:
                    return False
            c = server.client()
            role = c.execute_command("ROLE")[0]
            c.close()
            return role == b"master"
        poll(done, timeout, f"failover to port {server.port}")

    def stop(self) -> None:
        for s in [*self.sentinels, self.replica, self.master]:
            s.stop()


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(100):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class Cluster:
    """A Redis Cluster of three masters (no replicas), created with ``redis-cli --cluster``."""

    def __init__(self, size: int = 3) -> None:
        self.nodes = [Server("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                             "--cluster-node-timeout", "2000", "--save", "",
                             "--appendonly", "no", port=_cluster_port())
                      for _ in range(size)]

    def start(self) -> None:
        for n in self.nodes:
            n.start()
        subprocess.run(
            [_exe("redis-cli"), "--cluster", "create",
             *(f"127.0.0.1:{n.port}" for n in self.nodes), "--cluster-replicas", "0",
             "--cluster-yes"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            timeout=30)
        for n in self.nodes:
            c = n.client()
            poll(lambda c=c: b"cluster_state:ok" in c.execute_command("CLUSTER", "INFO"), 20,
                 f"cluster node {n.port} reporting cluster_state:ok")
            # Every node must know every other node's slots before clients route by them.
            poll(lambda c=c: len(c.execute_command("CLUSTER", "SLOTS")) == len(self.nodes), 20,
                 f"cluster node {n.port} knowing all slots")
            c.close()

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [n.address for n in self.nodes]

    def node_of(self, key: str) -> int:
        """The port of the node that owns ``key``'s slot."""
        c = self.nodes[0].client()
        slot = int(c.execute_command("CLUSTER", "KEYSLOT", key))
        for start, end, master, *_ in c.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                c.close()
                return int(master[1])
        c.close()
        raise AssertionError(f"no node owns slot {slot}")

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()
