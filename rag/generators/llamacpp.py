"""The llama.cpp generator: kept prefix states, log-probabilities, layer outputs."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from rag.generators.base import (
    CHATML,
    END_OF_TURN,
    Message,
    Stream,
    _common_length,
    _sha256_text,
    _softmax_over,
    _state_store,
    clean_stream,
    log_softmax_at,
    logprob_summary,
    prefix_text,
    timed_stream,
)
from rag.generators.states import SavedState, state_key
from rag.models.assembly import ensure_gguf, file_sha256
from rag.models.names import GeneratorSource
from rag.models.registry import ModelError
from rag.settings import Settings
from rag.types import Prefix, Usage

# Used when a GGUF carries no chat template of its own.
# ---------------------------------------------------------------- llama.cpp


def _counting_llama():  # noqa: ANN202 - a Llama subclass, made on first use so that importing is lazy
    from llama_cpp import Llama

    class CountingLlama(Llama):
        """A Llama that records how many prompt tokens each generation actually evaluated, and the log-probability
        of each token it sampled (read from the context's logits before the next evaluation replaces them)."""

        prompt_evaluated = 0
        sampled = 0
        _first_eval = False
        layer_capture: LayerCapture | None = None  # set by LlamaCppGenerator.warm_up
        prompt_layers: tuple[int, ...] = ()  # the layers the next generation's prompt evaluation reads
        reply_layers: tuple[int, ...] = ()  # the layers each of its reply tokens' evaluations reads (for fitting)

        def generate(self, tokens, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201 - llama-cpp's signature
            import llama_cpp

            self._first_eval, self.sampled, self.sampled_logprobs = True, 0, []
            self.prompt_rows, self.reply_rows = {}, ReplyRows()
            for token in super().generate(tokens, *args, **kwargs):  # create_completion never sends into it
                self.sampled += 1
                if not llama_cpp.llama_vocab_is_eog(self._model.vocab, token):
                    row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.ctx, -1), shape=(self.n_vocab(),))
                    self.sampled_logprobs.append((self.detokenize([token]).decode("utf-8", "replace"),
                                                  log_softmax_at(row, token)))
                yield token

        def eval(self, tokens) -> None:  # noqa: ANN001 - llama-cpp's signature
            first, self._first_eval = self._first_eval, False
            layers = self.prompt_layers if first else self.reply_layers
            if first:
                self.prompt_evaluated = len(tokens)
            if not layers or self.layer_capture is None:
                super().eval(tokens)
                return
            with self.layer_capture.reading(layers) as rows:
                super().eval(tokens)
            if first:
                self.prompt_rows = dict(rows)
            else:
                self.reply_rows.add(rows)

    return CountingLlama


class LayerCapture:
    """Reads the outputs of chosen layers (llama.cpp's tensors `l_out-N`, N from 0) at the last position of an
    evaluation, through the context's eval callback: the scheduler asks before computing each node whether its
    data is wanted, so an unarmed capture costs one call per node and copies nothing."""

    def __init__(self, n_embd: int) -> None:
        import llama_cpp

        self.n_embd = n_embd
        self.rows: dict[int, np.ndarray] = {}
        self._wanted: dict[bytes, int] = {}
        self._ggml = _ggml_base()
        self.callback = llama_cpp.ggml_backend_sched_eval_callback(self._on_tensor)

    @contextlib.contextmanager
    def reading(self, layers: tuple[int, ...]) -> Iterator[dict[int, np.ndarray]]:
        """Armed for `layers` within the block; the rows read (the last evaluated position's) fill the dict."""
        self.rows = {}
        self._wanted = {f"l_out-{n}".encode(): n for n in layers}
        try:
            yield self.rows
        finally:
            self._wanted = {}

    def _on_tensor(self, tensor: int, ask: bool, _user_data: int) -> bool:
        layer = self._wanted.get(self._ggml.ggml_get_name(tensor)) if self._wanted else None
        if ask or layer is None:
            return layer is not None  # when computed (ask false) a node must answer true for the graph to go on
        size, count = self._ggml.ggml_nbytes(tensor), self._ggml.ggml_nelements(tensor)
        if size == 4 * count and count % self.n_embd == 0:  # float32 rows of n_embd, one per position
            row = np.empty(self.n_embd, dtype=np.float32)
            self._ggml.ggml_backend_tensor_get(tensor, row.ctypes.data, size - 4 * self.n_embd, 4 * self.n_embd)
            self.rows[layer] = row
        return True


class ReplyRows:
    """Layer outputs read at each reply token's evaluation: the last one (where the reply, all but its final token,
    has been read) and their mean over the reply."""

    def __init__(self) -> None:
        self.last: dict[int, np.ndarray] = {}
        self._sums: dict[int, np.ndarray] = {}
        self._count = 0

    def add(self, rows: dict[int, np.ndarray]) -> None:
        self.last, self._count = dict(rows), self._count + 1
        for layer, row in rows.items():
            self._sums[layer] = self._sums.get(layer, 0.0) + row.astype(np.float64)

    def mean(self) -> dict[int, np.ndarray]:
        return {layer: total / self._count for layer, total in self._sums.items()}


def _rounded_rows(rows: dict[int, np.ndarray]) -> dict[int, list[float]]:
    """Layer outputs as plain lists, rounded as recorded for fitting (a probe scores what it was fitted on)."""
    return {n: [round(float(v), 4) for v in row] for n, row in sorted(rows.items())}


@functools.cache
def _ggml_base() -> ctypes.CDLL:
    """ggml's base library as llama-cpp-python ships it, with the few tensor functions LayerCapture calls."""
    import llama_cpp

    folder = Path(llama_cpp.__file__).parent / "lib"
    library = ctypes.CDLL(str(next(iter(sorted(folder.glob("*ggml-base.*"))), folder / "libggml-base.so")))
    library.ggml_get_name.restype, library.ggml_get_name.argtypes = ctypes.c_char_p, [ctypes.c_void_p]
    library.ggml_nelements.restype, library.ggml_nelements.argtypes = ctypes.c_int64, [ctypes.c_void_p]
    library.ggml_nbytes.restype, library.ggml_nbytes.argtypes = ctypes.c_size_t, [ctypes.c_void_p]
    library.ggml_backend_tensor_get.restype = None
    library.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
    return library


def _with_layer_capture(llm) -> LayerCapture:  # noqa: ANN001 - a CountingLlama
    """Give `llm` a context whose eval callback is a LayerCapture (llama-cpp-python takes the callback only when a
    context is made, so the context made with the model is replaced by an equal one carrying it)."""
    from llama_cpp import _internals

    capture = LayerCapture(llm.n_embd())
    params = llm.context_params
    params.cb_eval, params.cb_eval_user_data = capture.callback, None
    made = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
    previous, llm._ctx = llm._ctx, llm._stack.enter_context(contextlib.closing(made))
    previous.close()
    llm.layer_capture = capture
    return capture


_loaded_llamas: weakref.WeakSet[LlamaCppGenerator] = weakref.WeakSet()


@atexit.register
def _close_llamas() -> None:
    """Free loaded llama.cpp models while the interpreter is whole: freed during its teardown instead, each printed
    "Exception ignored in: Llama.__del__ ... TypeError" as it exited."""
    for generator in list(_loaded_llamas):
        generator.close()



class LlamaCppGenerator:
    """llama.cpp through llama-cpp-python: loads a GGUF directly; the fast engine on CPU.

    The prompt is rendered with the GGUF's own chat template and passed as tokens. With a `Prefix`, the
    prefix's state is made current before generating: kept in the context already, restored from memory or
    from a saved file, or computed (and saved); llama-cpp-python then evaluates only the tokens after it.
    """

    engine = "llama-cpp"

    def __init__(self, name: str, gguf: Path | None, settings: Settings, source: GeneratorSource) -> None:
        self.name = name
        self.settings = settings
        self.source = source
        self.usage = Usage()
        self._gguf = gguf
        self._llm = None
        self._template = None
        self._model_sha256 = ""
        self._states = _state_store(settings, name)
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        with self._lock:
            if self._llm is None:
                import llama_cpp
                from llama_cpp.llama_chat_format import Jinja2ChatFormatter

                path = self._gguf or ensure_gguf(self.source.spec, self.settings)  # type: ignore[arg-type]
                self._model_sha256 = self.source.spec.sha256 if self.source.spec else file_sha256(path)
                llm = _counting_llama()(
                    model_path=str(path),
                    n_ctx=self.settings.context_tokens,
                    n_threads=self.settings.n_threads,
                    n_batch=512,
                    seed=self.settings.seed,
                    verbose=False,
                )
                _with_layer_capture(llm)
                eos = llm._model.token_get_text(llm.token_eos()) if llm.token_eos() >= 0 else ""
                self._template = Jinja2ChatFormatter(llm.metadata.get("tokenizer.chat_template") or CHATML,
                                                     eos_token=eos, bos_token="")
                self._engine_id = f"llama-cpp {llama_cpp.__version__}"
                self._llm = llm
                _loaded_llamas.add(self)

    @property
    def model_sha256(self) -> str:
        """The SHA-256 of the loaded GGUF (what a fitted decision is tied to)."""
        self.warm_up()
        return self._model_sha256

    def forget_kept(self) -> None:
        """Empty the context and the states kept in RAM (saved files stay): the next prompt is processed whole
        unless a saved state covers its prefix. For measuring what a prompt costs read afresh."""
        with self._lock:
            if self._llm is not None:
                self._llm.reset()
            self._states.forget()

    def close(self) -> None:
        """Free the model and its context now (loading again on the next use)."""
        with self._lock:
            if self._llm is not None:
                self._llm.close()
                self._llm = None

    def count_tokens(self, text: str) -> int:
        self.warm_up()
        return len(self._tokenize(text))

    def _tokenize(self, text: str) -> list[int]:
        return self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def render(self, messages: list[Message]) -> str:
        self.warm_up()
        return self._template(messages=messages).prompt

    def stream(self, messages: list[Message], max_tokens: int, stop: list[str] | None = None,
               prefix: Prefix | None = None, layers: tuple[int, ...] = (), reply_layers: tuple[int, ...] = (),
               ) -> Stream:
        prompt = self.render(messages)
        with self._lock:
            tokens, usage = self._begin(prompt, prefix)
            # read while the prompt's last tokens, and then each reply token, are evaluated (CountingLlama)
            self._llm.prompt_layers, self._llm.reply_layers = layers, reply_layers
            try:
                chunks = self._llm.create_completion(
                    tokens,
                    max_tokens=max_tokens,
                    temperature=self.settings.temperature,
                    top_k=1 if self.settings.temperature <= 0 else 40,
                    seed=self.settings.seed,
                    stop=(stop or []) + END_OF_TURN,
                    stream=True,
                )
                self._llm.prompt_evaluated = 0
                yield from timed_stream(clean_stream((c["choices"][0]["text"] for c in chunks), stop or []), usage)
            finally:
                self._llm.prompt_layers = self._llm.reply_layers = ()
            usage.evaluated_tokens += self._llm.prompt_evaluated
            usage.completion_tokens = self._llm.sampled
            logprob_summary(self._llm.sampled_logprobs, usage)
            usage.layer_states = _rounded_rows(self._llm.prompt_rows) if layers else {}
            if reply_layers:
                usage.reply_states = {"last": _rounded_rows(self._llm.reply_rows.last),
                                      "mean": _rounded_rows(self._llm.reply_rows.mean())}
            self.usage = usage
            return usage

    def prefill(self, messages: list[Message], prefix: Prefix) -> Usage:
        """Make the prompt's prefix current (computing and saving its state if needed) without generating."""
        prompt = self.render(messages)
        with self._lock:
            return self._begin(prompt, prefix)[1]

    def option_probabilities(self, messages: list[Message], options: tuple[str, ...],
                             prefix: Prefix | None = None) -> tuple[dict[str, float], Usage]:
        prompt = self.render(messages)
        with self._lock:
            tokens, usage = self._begin(prompt, prefix)
            logits, evaluated = self._next_token_logits(tokens)
            usage.evaluated_tokens += evaluated
            return _softmax_over(logits, {o: self._tokenize(o)[0] for o in options}), usage

    def continuation_logprobs(self, messages: list[Message], continuation: str,
                              prefix: Prefix | None = None) -> tuple[list[float], Usage]:
        prompt = self.render(messages)
        with self._lock:
            tokens, usage = self._begin(prompt, prefix)
            following = self._tokenize(continuation)
            self._check_fits(len(tokens) + len(following))
            rows, evaluated = self._logits_through(tokens, following)
            usage.evaluated_tokens += evaluated
            return [log_softmax_at(row, t) for row, t in zip(rows, following, strict=True)], usage

    def hidden_state(self, messages: list[Message], prefix: Prefix | None = None, layers: tuple[int, ...] = (),
                     ) -> tuple[np.ndarray, Usage]:
        import llama_cpp

        prompt = self.render(messages)
        with self._lock:
            tokens, usage = self._begin(prompt, prefix)
            llm, keep = self._llm, self._evaluate_all_but_last(tokens)
            # With embeddings on, llama.cpp outputs every position of a batch: only the last token goes through so
            llama_cpp.llama_set_embeddings(llm.ctx, True)
            try:
                with llm.layer_capture.reading(layers) as rows:
                    llm.eval(tokens[-1:])
                state = np.ctypeslib.as_array(llama_cpp.llama_get_embeddings_ith(llm.ctx, -1), shape=(llm.n_embd(),))
                state = state.copy()
            finally:
                llama_cpp.llama_set_embeddings(llm.ctx, False)
            usage.evaluated_tokens += len(tokens) - keep
            usage.layer_states = _rounded_rows(rows)
            return state, usage

    def _evaluate_all_but_last(self, tokens: list[int]) -> int:
        """Make the context hold every token but the last (keeping what it holds already); how many it kept."""
        keep = self._rewind(tokens)
        self._llm.eval(tokens[keep:-1])
        return keep

    def _rewind(self, tokens: list[int]) -> int:
        """Drop what the context holds beyond its common start with `tokens`, never keeping their last token (it is
        evaluated again, so its logits are fresh); how many tokens the context keeps."""
        llm = self._llm
        llm.n_tokens = _common_length(llm.input_ids[: min(llm.n_tokens, len(tokens) - 1)], tokens)
        return llm.n_tokens

    def _logits_through(self, tokens: list[int], following: list[int]) -> tuple[np.ndarray, int]:
        """Evaluate `tokens` then `following` (keeping what the context holds of them): the logits before each
        token of `following`, and how many tokens were evaluated. Llama.eval keeps only the last position's
        logits, so the last prompt token and `following` go through the context's batch with every position's."""
        llm, keep = self._llm, self._evaluate_all_but_last(tokens)
        tail = [tokens[-1], *following[:-1]]
        rows = []
        for start in range(0, len(tail), llm.n_batch):
            batch = tail[start:start + llm.n_batch]
            llm._ctx.kv_cache_seq_rm(-1, llm.n_tokens, -1)
            llm._batch.set_batch(batch=batch, n_past=llm.n_tokens, logits_all=True)
            llm._ctx.decode(llm._batch)
            rows.append(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(len(batch), llm.n_vocab())).copy())
            llm.input_ids[llm.n_tokens:llm.n_tokens + len(batch)] = batch
            llm.n_tokens += len(batch)
        return np.concatenate(rows), len(tokens) - 1 - keep + len(tail)

    def _begin(self, prompt: str, prefix: Prefix | None) -> tuple[list[int], Usage]:
        """With the lock held: the prompt's tokens, and its prefix's state made current (counted in the Usage)."""
        tokens = self._tokenize(prompt)
        self._check_fits(len(tokens))
        usage = Usage(prompt_tokens=len(tokens))
        head = prefix_text(prompt, prefix.varying) if prefix else ""
        usage.evaluated_tokens = self._use_prefix(head, prefix, usage) if head else 0
        return tokens, usage

    def _next_token_logits(self, tokens: list[int]) -> tuple[np.ndarray, int]:
        """Evaluate the tokens the context does not hold yet; the logits of the token after them."""
        import llama_cpp

        llm = self._llm
        keep = self._rewind(tokens)
        llm.eval(tokens[keep:])
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
        return logits.copy(), len(tokens) - keep

    def _check_fits(self, n_tokens: int) -> None:
        if n_tokens >= self.settings.context_tokens:
            raise ModelError(f"the prompt has {n_tokens} tokens; the context window holds "
                             f"{self.settings.context_tokens} (setting context_tokens)")

    def _use_prefix(self, head: str, prefix: Prefix, usage: Usage) -> int:
        """Make the state of `head` current; returns how many tokens had to be computed for it."""
        started = time.perf_counter()
        tokens = self._tokenize(head)
        llm = self._llm
        computed = 0
        if llm.n_tokens >= len(tokens) and llm.input_ids[: len(tokens)].tolist() == tokens:
            usage.state = "context"
        else:
            key = state_key(model_sha256=self._model_sha256, engine=self._engine_id, prefix=_sha256_text(head))
            usage.state = self._restore(key)
            if usage.state == "none":
                self._check_fits(len(tokens))
                # Every prompt opens with the same instructions: keep what the context already holds of the head
                # (retrieved passages from several documents then cost only their own tokens).
                keep = _common_length(llm.input_ids[: llm.n_tokens], tokens)
                llm.n_tokens = keep
                llm.eval(tokens[keep:])
                computed = len(tokens) - keep
                saved = SavedState(key, tokens, self._snapshot(), prefix.label)
                self._states.remember(key, saved)
                if prefix.persist:
                    self._save(saved)
                usage.state = "computed"
        usage.prefix_s = round(time.perf_counter() - started, 4)
        return computed

    def _restore(self, key: str) -> str:
        """Load the state of `key` from memory or disk into the context: "memory", "disk" or "none"."""
        saved = self._states.recall(key)
        if saved is not None and self._load(saved):
            return "memory"
        saved = self._states.load(key)
        if saved is not None and self._load(saved):
            self._states.remember(key, saved)
            return "disk"
        return "none"

    def _snapshot(self) -> bytes:
        import llama_cpp

        ctx = self._llm.ctx
        size = llama_cpp.llama_state_get_size(ctx)
        buffer = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_get_data(ctx, buffer, size)
        return ctypes.string_at(buffer, written)

    def _load(self, saved: SavedState) -> bool:
        import llama_cpp

        llm = self._llm
        if len(saved.tokens) >= self.settings.context_tokens:
            return False
        buffer = (ctypes.c_uint8 * len(saved.data)).from_buffer_copy(saved.data)
        if llama_cpp.llama_state_set_data(llm.ctx, buffer, len(saved.data)) != len(saved.data):
            llm.reset()
            return False
        llm.input_ids[: len(saved.tokens)] = saved.tokens
        llm.n_tokens = len(saved.tokens)
        llm._requires_eval = True  # as Llama.load_state does: the logits are not those of a live decode
        return True

    def _save(self, saved: SavedState) -> None:
        try:
            self._states.save(saved)
        except OSError as exc:  # a full or read-only cache costs speed later, never the answer
            import logging

            logging.getLogger(__name__).warning("could not save the generator state: %s", exc)
