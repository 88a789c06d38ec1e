"""The API keeps its OpenAPI contract: schemathesis's command line, with every check on, against a real `rag serve`
on 127.0.0.1 (the packaged models, the generator included) over real HTTP.

Every phase runs (the schema's examples, its coverage cases, fuzzing, stateful sequences), with a bounded number of
generated requests per operation and a fixed seed, so the suite sends the same cases every run: positive ones (the
schema calls them valid: the server must accept them) and negative ones (it must refuse them). The settings and the
hooks that shape positive cases by the rules JSON Schema cannot state are tests/server/schemathesis.toml and
tests/server/contract_hooks.py; `make check-contract` runs the same contract for longer, with a random seed.
(Schemathesis's pytest plugin is not used: its lazy schemas read a pytest attribute that pytest 9.2 no longer has.)
"""

from __future__ import annotations

import subprocess

import httpx
import pytest

from tests.conftest import REPO
from tests.server.test_app import Server, server  # noqa: F401 - the real server, started once for this module
from tools.check_contract import schemathesis_command

pytestmark = [pytest.mark.slow, pytest.mark.integration]

EXAMPLES = 10  # per operation and phase: about 70 s for the ten operations on 2 cores
SEED = "41"
RUN_TIMEOUT_S = 600


def test_every_operation_keeps_the_contract_with_every_check_on(server: Server) -> None:  # noqa: F811
    command = schemathesis_command(server.url, "--max-examples", str(EXAMPLES), "--seed", SEED)
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
    report = done.stdout[-30000:] + done.stderr[-5000:]
    assert done.returncode == 0, report
    assert "10 selected / 10 total" in report and " passed" in report, report
    health = httpx.get(f"{server.url}/health", timeout=30).json()
    assert health["status"] == "ok", health  # the run left the server serving
