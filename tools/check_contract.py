"""`make check-contract`: the API's OpenAPI contract for longer than the suite runs it. Schemathesis's own command
line, with every check on (tests/server/schemathesis.toml and its hooks), against a real `rag serve` on 127.0.0.1
over a copy of the seed corpus, for a time budget; its JUnit report and the server's log are left in the given
folder."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tools.serving import free_port, wait_healthy

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "tests" / "server" / "schemathesis.toml"
READY_TIMEOUT_S = 900  # indexing the seed article and loading the models on 2 cores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=300, help="schemathesis's time budget (--max-time)")
    parser.add_argument("--report", type=Path, default=REPO / "test-artifacts" / "contract",
                        help="folder for schemathesis's JUnit report")
    parser.add_argument("extra", nargs="*", help="more schemathesis options (after --)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rag-contract-") as folder:
        url, server = _serve(Path(folder))
        try:
            try:
                wait_healthy(f"{url}/health", server, Path(folder) / "server.log", "rag serve", READY_TIMEOUT_S,
                             interval_s=0.5)
            except (RuntimeError, TimeoutError) as error:
                raise SystemExit(str(error)) from None
            command = schemathesis_command(url, "--max-time", str(args.seconds), "--max-examples", "1000",
                                           "--report", "junit", "--report-dir", str(args.report), *args.extra)
            print("$", " ".join(command), flush=True)
            return subprocess.run(command, cwd=REPO, check=False).returncode
        finally:
            server.terminate()
            server.wait(timeout=60)
            args.report.mkdir(parents=True, exist_ok=True)
            shutil.copy(Path(folder) / "server.log", args.report / "server.log")


def _serve(folder: Path) -> tuple[str, subprocess.Popen]:
    """`rag serve` on a free loopback port over a copy of the seed corpus (its articles only), with its own index."""
    (folder / "corpus").mkdir()
    for article in (REPO / "corpus").glob("*.txt"):
        shutil.copy(article, folder / "corpus")
    port = free_port()
    env = {**os.environ, "RAG_CORPUS_DIR": str(folder / "corpus"), "RAG_INDEX_DIR": str(folder / "index")}
    log = open(folder / "server.log", "w")  # noqa: SIM115 - the server writes it until it stops
    server = subprocess.Popen([sys.executable, "-m", "rag.cli", "serve", "--port", str(port)], cwd=REPO, env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    return f"http://127.0.0.1:{port}", server


def schemathesis_command(url: str, *options: str) -> list[str]:
    """Schemathesis's command line with this project's configuration and hooks, every check on, against the API at
    `url` (the suite's bounded run and `make check-contract` alike)."""
    return [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run", "--checks", "all",
            *options, f"{url}/openapi.json"]


if __name__ == "__main__":
    sys.exit(main())
