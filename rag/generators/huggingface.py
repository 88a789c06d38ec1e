"""The transformers generator (torch), with a kept prefix cache."""

from __future__ import annotations

import copy
import dataclasses
import functools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from rag.generators.base import (
    Message,
    Stream,
    _sha256_text,
    _softmax_over,
    _state_store,
    clean_stream,
    log_softmax_at,
    prefix_text,
    timed_stream,
)
from rag.generators.llamacpp import _rounded_rows
from rag.generators.states import state_key
from rag.models.assembly import convert_gguf_to_hf, ensure_gguf
from rag.models.names import GeneratorSource
from rag.models.registry import ModelError
from rag.settings import Settings
from rag.types import Prefix, Usage

# ---------------------------------------------------------------- transformers


class TransformersGenerator:
    """Hugging Face transformers: any HF model id or folder; packaged GGUFs are converted once to bf16.

    With a `Prefix`, the prefix's `past_key_values` are computed once, kept in memory (not on disk), and a copy
    is handed to `generate` for each prompt, which then processes only the tokens after the prefix.
    """

    engine = "transformers"

    def __init__(self, name: str, settings: Settings, source: GeneratorSource) -> None:
        self.name = name
        self.settings = settings
        self.source = source
        self.usage = Usage()
        self._model = None
        self._tokenizer = None
        self._states = _state_store(settings, name)
        self._lock = threading.Lock()

    def _model_location(self) -> str:
        if self.source.kind == "hf":
            return self.source.location
        gguf = ensure_gguf(self.source.spec, self.settings) if self.source.spec else Path(self.source.location)
        return str(convert_gguf_to_hf(gguf, self.settings.models_dir / f"{self.name}-hf-bf16"))

    def warm_up(self) -> None:
        with self._lock:
            if self._model is None:
                import torch
                import transformers
                from transformers import AutoModelForCausalLM, AutoTokenizer

                torch.set_num_threads(self.settings.n_threads)
                location = self._model_location()
                self._tokenizer = AutoTokenizer.from_pretrained(location)
                self._model = AutoModelForCausalLM.from_pretrained(location, dtype=torch.bfloat16)
                self._model.to(self.settings.device).eval()
                model_id = self.source.spec.sha256 if self.source.spec else location
                self._model_id = f"{model_id} transformers {transformers.__version__} {self.settings.device}"

    def count_tokens(self, text: str) -> int:
        self.warm_up()
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def render(self, messages: list[Message]) -> str:
        self.warm_up()
        return self._tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _ids(self, text: str):  # noqa: ANN202 - a 1 x n tensor of token ids
        return self._tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids.to(self._model.device)

    def _prefix_cache(self, head: str, ids, usage: Usage):  # noqa: ANN001, ANN202 - tensors and a Cache
        """A private copy of the prefix's cache, when the prompt's tokens start with the prefix's tokens."""
        import torch
        from transformers import DynamicCache

        started = time.perf_counter()
        head_ids = self._ids(head)
        n = head_ids.shape[1]
        if n >= ids.shape[1] or not torch.equal(ids[0, :n], head_ids[0]):
            return None
        key = state_key(model=self._model_id, prefix=_sha256_text(head))
        cache = self._states.recall(key)
        usage.state = "memory"
        if cache is None:
            cache = DynamicCache(config=self._model.config)
            with torch.no_grad():
                self._model(input_ids=head_ids, use_cache=True, **{_cache_argument(): cache})
            self._states.remember(key, cache)
            usage.state = "computed"
        usage.prefix_s = round(time.perf_counter() - started, 4)
        return copy.deepcopy(cache)

    def _begin(self, prompt: str, prefix: Prefix | None):  # noqa: ANN202 - ids, Usage and a Cache (or None)
        """With the lock held: the prompt's token ids and a private copy of its prefix's cache, if kept."""
        ids = self._ids(prompt)
        usage = Usage(prompt_tokens=ids.shape[1], evaluated_tokens=ids.shape[1])
        head = prefix_text(prompt, prefix.varying) if prefix else ""
        cache = self._prefix_cache(head, ids, usage) if head else None
        if cache is not None and usage.state == "memory":  # a computed prefix was processed in this call
            usage.evaluated_tokens -= cache.get_seq_length()
        return ids, usage, cache

    def prefill(self, messages: list[Message], prefix: Prefix) -> Usage:
        prompt = self.render(messages)
        with self._lock:
            ids, usage, cache = self._begin(prompt, prefix)
            usage.evaluated_tokens = cache.get_seq_length() if cache is not None and usage.state == "computed" else 0
            return usage

    def option_probabilities(self, messages: list[Message], options: tuple[str, ...],
                             prefix: Prefix | None = None) -> tuple[dict[str, float], Usage]:
        prompt = self.render(messages)
        with self._lock:
            output, usage = self._forward(prompt, prefix)
            option_ids = {o: self._tokenizer.encode(o, add_special_tokens=False)[0] for o in options}
            return _softmax_over(output.logits[0, -1].float().cpu().numpy(), option_ids), usage

    def continuation_logprobs(self, messages: list[Message], continuation: str,
                              prefix: Prefix | None = None) -> tuple[list[float], Usage]:
        prompt = self.render(messages)
        with self._lock:
            following = self._ids(continuation)
            output, usage = self._forward(prompt, prefix, following)
            rows = output.logits[0, -following.shape[1] - 1:-1].float().cpu().numpy()
            return [log_softmax_at(row, int(t)) for row, t in zip(rows, following[0].tolist(), strict=True)], usage

    def hidden_state(self, messages: list[Message], prefix: Prefix | None = None, layers: tuple[int, ...] = (),
                     ) -> tuple[np.ndarray, Usage]:
        prompt = self.render(messages)
        with self._lock:
            output, usage = self._forward(prompt, prefix, output_hidden_states=True)
            # hidden_states[0] is the embeddings' output, so layer n's (llama.cpp's l_out-n) is at n + 1
            usage.layer_states = _rounded_rows({n: output.hidden_states[n + 1][0, -1].float().cpu().numpy()
                                                for n in layers if n + 1 < len(output.hidden_states)})
            return output.hidden_states[-1][0, -1].float().cpu().numpy(), usage

    def _forward(self, prompt: str, prefix: Prefix | None, following=None, **options):  # noqa: ANN001, ANN003, ANN202
        """With the lock held: the model's output over the prompt (then the `following` token ids) after the kept
        prefix's cache, and the call's Usage."""
        import torch

        ids, usage, cache = self._begin(prompt, prefix)
        if following is not None:
            ids = torch.cat([ids, following], dim=1)
        kept = cache.get_seq_length() if cache is not None else 0
        with torch.no_grad():
            extra = {_cache_argument(): cache} if cache is not None else {}
            return self._model(input_ids=ids[:, kept:], use_cache=cache is not None, **extra, **options), usage

    def stream(self, messages: list[Message], max_tokens: int, stop: list[str] | None = None,
               prefix: Prefix | None = None, layers: tuple[int, ...] = (), reply_layers: tuple[int, ...] = (),
               ) -> Stream:
        """As the Generator protocol says; `layers` are not read here (verification reads them in a pass of its own),
        nor `reply_layers`."""
        import torch
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        prompt = self.render(messages)
        with self._lock:
            ids, usage, cache = self._begin(prompt, prefix)
            streamer = TextIteratorStreamer(self._tokenizer, skip_prompt=True, skip_special_tokens=True)
            sampling = {"do_sample": False} if self.settings.temperature <= 0 else {
                "do_sample": True, "temperature": self.settings.temperature}
            torch.manual_seed(self.settings.seed)
            cancel = threading.Event()  # set when the caller stops reading: generate() then stops early
            failure: list[BaseException] = []

            def run() -> None:
                try:
                    self._model.generate(
                        input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens,
                        streamer=streamer, pad_token_id=self._tokenizer.eos_token_id,
                        stopping_criteria=StoppingCriteriaList([_Cancelled(cancel)]),
                        **({_cache_argument(): cache} if cache is not None else {}), **sampling)
                except BaseException as exc:  # surfaced in the caller's thread below
                    failure.append(exc)
                    streamer.end()

            worker = threading.Thread(target=run, daemon=True)
            worker.start()
            finished = False

            generated: list[str] = []

            def pieces() -> Iterator[str]:
                nonlocal finished
                for piece in streamer:
                    generated.append(piece)
                    yield piece
                finished = True

            try:
                yield from timed_stream(clean_stream(pieces(), stop or []), usage)
            finally:
                cancel.set()
                if not finished:  # the end signal is still to come; an exhausted streamer would block
                    for _ in streamer:
                        pass
                worker.join()
            if failure:
                raise ModelError(f"{self.name}: generation failed: {failure[0]}") from failure[0]
            usage.completion_tokens = len(self._tokenizer.encode("".join(generated), add_special_tokens=False))
            self.usage = usage
            return usage


@functools.cache
def _cache_argument() -> str:
    """The keyword for a KV cache: transformers 5.2x renamed `past_key_values` to `cache` (the old name warns)."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return "cache" if "cache" in {f.name for f in dataclasses.fields(CausalLMOutputWithPast)} else "past_key_values"


class _Cancelled:
    """A transformers stopping criterion that ends generation once the reader has gone."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):  # noqa: ANN001, ANN204 - transformers' signature
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)
