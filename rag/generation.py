"""Text generation behind one interface (chat messages in, text pieces out) with llama.cpp and transformers engines."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from rag.models import GeneratorSource, ModelError, convert_gguf_to_hf, ensure_gguf, resolve_generator
from rag.settings import Settings

Message = dict[str, str]

# Chat-template tokens a small model sometimes writes out as text; they never belong in an answer.
TEMPLATE_TOKENS = re.compile(r"<\|(?:im_start|im_end|endoftext|end|eot_id|assistant|user|system)\|>")
END_OF_TURN = ["<|im_end|>", "<|endoftext|>", "<|eot_id|>"]


class Generator(Protocol):
    """What the rest of the library needs of a generator. One generation at a time per instance."""

    name: str
    engine: str

    def warm_up(self) -> None: ...

    def stream(self, messages: list[Message], max_tokens: int, stop: list[str] | None = None) -> Iterator[str]: ...

    def count_tokens(self, text: str) -> int: ...


def generate(generator: Generator, messages: list[Message], max_tokens: int, stop: list[str] | None = None) -> str:
    """The whole reply at once."""
    return "".join(generator.stream(messages, max_tokens, stop))


class StopFilter:
    """Cuts a stream at the first stop sequence, holding back text that could be the start of one."""

    def __init__(self, stop: list[str]) -> None:
        self.stop = [s for s in stop if s]
        self.pending = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.pending += piece
        cut = min((i for i in (self.pending.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            out, self.pending, self.stopped = self.pending[:cut], "", True
            return out
        hold = max((len(s) - 1 for s in self.stop), default=0)
        keep = next((n for n in range(min(hold, len(self.pending)), 0, -1)
                     if any(s.startswith(self.pending[-n:]) for s in self.stop)), 0)
        out = self.pending[: len(self.pending) - keep]
        self.pending = self.pending[len(out):]
        return out

    def flush(self) -> str:
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out


def _clean_stream(pieces: Iterator[str], stop: list[str]) -> Iterator[str]:
    stops = StopFilter(stop + END_OF_TURN)
    for piece in pieces:
        text = TEMPLATE_TOKENS.sub("", stops.feed(piece))
        if text:
            yield text
        if stops.stopped:
            return
    tail = TEMPLATE_TOKENS.sub("", stops.flush())
    if tail:
        yield tail


class LlamaCppGenerator:
    """llama.cpp through llama-cpp-python: loads a GGUF directly; the fast engine on CPU."""

    engine = "llama-cpp"

    def __init__(self, name: str, gguf: Path | None, settings: Settings, source: GeneratorSource) -> None:
        self.name = name
        self.settings = settings
        self.source = source
        self._gguf = gguf
        self._llm = None
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        with self._lock:
            if self._llm is None:
                from llama_cpp import Llama

                path = self._gguf or ensure_gguf(self.source.spec, self.settings)  # type: ignore[arg-type]
                self._llm = Llama(
                    model_path=str(path),
                    n_ctx=self.settings.context_tokens,
                    n_threads=self.settings.n_threads,
                    n_batch=512,
                    seed=self.settings.seed,
                    verbose=False,
                )

    def count_tokens(self, text: str) -> int:
        self.warm_up()
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def stream(self, messages: list[Message], max_tokens: int, stop: list[str] | None = None) -> Iterator[str]:
        self.warm_up()
        with self._lock:
            chunks = self._llm.create_chat_completion(
                messages=messages,
                max_tokens=max_tokens,
                temperature=self.settings.temperature,
                top_k=1 if self.settings.temperature <= 0 else 40,
                seed=self.settings.seed,
                stop=(stop or []) + END_OF_TURN,
                stream=True,
            )
            pieces = (c["choices"][0]["delta"].get("content") or "" for c in chunks)
            yield from _clean_stream(pieces, stop or [])


class TransformersGenerator:
    """Hugging Face transformers: any HF model id or folder; packaged GGUFs are converted once to bf16."""

    engine = "transformers"

    def __init__(self, name: str, settings: Settings, source: GeneratorSource) -> None:
        self.name = name
        self.settings = settings
        self.source = source
        self._model = None
        self._tokenizer = None
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
                from transformers import AutoModelForCausalLM, AutoTokenizer

                torch.set_num_threads(self.settings.n_threads)
                location = self._model_location()
                self._tokenizer = AutoTokenizer.from_pretrained(location)
                self._model = AutoModelForCausalLM.from_pretrained(location, dtype=torch.bfloat16)
                self._model.to(self.settings.device).eval()

    def count_tokens(self, text: str) -> int:
        self.warm_up()
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def stream(self, messages: list[Message], max_tokens: int, stop: list[str] | None = None) -> Iterator[str]:
        import torch
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        self.warm_up()
        with self._lock:
            inputs = self._tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            ).to(self._model.device)
            streamer = TextIteratorStreamer(self._tokenizer, skip_prompt=True, skip_special_tokens=True)
            sampling = {"do_sample": False} if self.settings.temperature <= 0 else {
                "do_sample": True, "temperature": self.settings.temperature}
            torch.manual_seed(self.settings.seed)
            cancel = threading.Event()  # set when the caller stops reading: generate() then stops early
            failure: list[BaseException] = []

            def run() -> None:
                try:
                    self._model.generate(
                        **inputs, max_new_tokens=max_tokens, streamer=streamer,
                        pad_token_id=self._tokenizer.eos_token_id,
                        stopping_criteria=StoppingCriteriaList([_Cancelled(cancel)]), **sampling)
                except BaseException as exc:  # surfaced in the caller's thread below
                    failure.append(exc)
                    streamer.end()

            worker = threading.Thread(target=run, daemon=True)
            worker.start()
            finished = False

            def pieces() -> Iterator[str]:
                nonlocal finished
                yield from streamer
                finished = True

            try:
                yield from _clean_stream(pieces(), stop or [])
            finally:
                cancel.set()
                if not finished:  # the end signal is still to come; an exhausted streamer would block
                    for _ in streamer:
                        pass
                worker.join()
            if failure:
                raise ModelError(f"{self.name}: generation failed: {failure[0]}") from failure[0]


class _Cancelled:
    """A transformers stopping criterion that ends generation once the reader has gone."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):  # noqa: ANN001, ANN204 - transformers' signature
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def make_generator(name: str, settings: Settings) -> Generator:
    """Pick the engine: llama.cpp for GGUF files unless told otherwise, transformers for HF models."""
    source = resolve_generator(name)
    engine = settings.engine
    if engine == "auto":
        engine = "transformers" if source.kind == "hf" else "llama-cpp"
    if engine == "llama-cpp":
        if source.kind == "hf":
            raise ModelError(f"the llama-cpp engine needs a GGUF model; {name!r} is a Hugging Face model")
        gguf = Path(source.location) if source.kind == "gguf-file" else None
        return LlamaCppGenerator(source.name, gguf, settings, source)
    if engine == "transformers":
        return TransformersGenerator(source.name, settings, source)
    raise ModelError(f"unknown engine {engine!r}: use auto, llama-cpp or transformers")
