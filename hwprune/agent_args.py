"""The device agent's command-line flags and defaults: the standard library only, so `hwprune --help` lists
`hwprune agent` without importing ONNX Runtime."""

from __future__ import annotations

import argparse
import os

DEFAULT_PORT = 8707
TOKEN_ENV = "HWPRUNE_AGENT_TOKEN"
MAX_REQUEST_MB = 256
RETRY_S = 120.0  # how long the workstation keeps trying an agent that stops answering (remote.Retry)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; 0.0.0.0 to serve the network)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free)")
    p.add_argument("--token-file", help=f"file whose first line is the token (else ${TOKEN_ENV}, else generated)")
    p.add_argument("--cache", default=os.path.join(os.path.expanduser("~"), ".cache", "hwprune-agent"),
                   help="the only folder the agent writes to (temporary files)")
    p.add_argument("--max-request-mb", type=float, default=MAX_REQUEST_MB, help="largest request accepted")
