"""What every generator engine shares: the interface the library calls, the prompt-prefix and usage records, and
the handling of a stream of text pieces (stop sequences, template tokens, timing). The engines live in
rag/generators/llamacpp.py, rag/generators/huggingface.py and rag/generators/openai_server.py; each imports this."""

from __future__ import annotations

import collections.abc
import hashlib
import re
import time
from collections.abc import Iterator
from typing import Protocol

import numpy as np

from rag.generators.states import StateStore
from rag.settings import Settings
from rag.types import Prefix, Usage

Message = dict[str, str]
Stream = collections.abc.Generator[str, None, "Usage"]  # text pieces; the return value is the call's Usage

# Chat-template tokens a small model sometimes writes out as text; they never belong in an answer.
TEMPLATE_TOKENS = re.compile(r"<\|(?:im_start|im_end|endoftext|end|eot_id|assistant|user|system)\|>")
END_OF_TURN = ["<|im_end|>", "<|endoftext|>", "<|eot_id|>"]


class Generator(Protocol):
    """What the rest of the library needs of a generator. One generation at a time per instance."""

    name: str
    engine: str
    usage: Usage

    def warm_up(self) -> None: ...

    def stream(self, messages: list[Message], max_tokens: int, stop: list[str] | None = None,
               prefix: Prefix | None = None, layers: tuple[int, ...] = (), reply_layers: tuple[int, ...] = (),
               ) -> Stream:
        """Text pieces as they are generated; the stream's return value is the call's Usage, with the outputs of
        `layers` at the prompt's last position and of `reply_layers` over the reply where the engine can read them
        (else none)."""
        ...

    def prefill(self, messages: list[Message], prefix: Prefix) -> Usage: ...

    def option_probabilities(self, messages: list[Message], options: tuple[str, ...],
                             prefix: Prefix | None = None) -> tuple[dict[str, float], Usage]:
        """How likely the reply is to begin with each option (normalised over them): one forward pass, no sampling."""
        ...

    def continuation_logprobs(self, messages: list[Message], continuation: str,
                              prefix: Prefix | None = None) -> tuple[list[float], Usage]:
        """The log-probability of each token of `continuation` as the reply to `messages`, read from the logits
        of one evaluation (no sampling); NotImplementedError where the engine cannot tell."""
        ...

    def hidden_state(self, messages: list[Message], prefix: Prefix | None = None, layers: tuple[int, ...] = (),
                     ) -> tuple[np.ndarray, Usage]:
        """The model's last hidden state (after its final norm: what its next-token logits are read from) at the
        prompt's last position, and the outputs of `layers` there in the Usage; NotImplementedError where the
        engine cannot tell."""
        ...

    def count_tokens(self, text: str) -> int: ...


def log_softmax_at(logits: np.ndarray, token: int) -> float:
    """The natural-log probability of `token` under one row of logits."""
    top = float(logits.max())
    return float(logits[token]) - top - float(np.log(np.exp(logits - top).sum()))


def generate(generator: Generator, messages: list[Message], max_tokens: int, stop: list[str] | None = None,
             prefix: Prefix | None = None) -> str:
    """The whole reply at once."""
    return complete(generator, messages, max_tokens, stop, prefix)[0]


def complete(generator: Generator, messages: list[Message], max_tokens: int, stop: list[str] | None = None,
             prefix: Prefix | None = None, layers: tuple[int, ...] = ()) -> tuple[str, Usage]:
    """The whole reply and what it cost the engine (a stream returns its Usage when it ends, with `layers`' outputs
    where the prompt ends)."""
    pieces: list[str] = []
    stream = generator.stream(messages, max_tokens, stop, prefix, layers)
    while True:
        try:
            pieces.append(next(stream))
        except StopIteration as done:
            return "".join(pieces), done.value or Usage()


def prefix_text(prompt: str, varying: str) -> str:
    """The rendered prompt before the last occurrence of `varying` ("" when it does not occur)."""
    at = prompt.rfind(varying) if varying else -1
    return prompt[:at] if at > 0 else ""


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


def clean_stream(pieces: Iterator[str], stop: list[str]) -> Iterator[str]:
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


def timed_stream(pieces: Iterator[str], usage: Usage) -> Iterator[str]:
    """Pass the pieces on, recording in `usage.decode_s` the time from the first piece to the last."""
    first = None
    for piece in pieces:
        first = first or time.perf_counter()
        yield piece
    usage.decode_s = round(time.perf_counter() - first, 4) if first else 0.0


def logprob_summary(sampled: list[tuple[str, float]], usage: Usage) -> None:
    """Record in `usage` the lowest, the mean and the lowest key-token log-probability of the sampled tokens."""
    values = [value for _, value in sampled]
    if not values:
        return
    key = [value for piece, value in sampled if re.search(r"[0-9A-Z]", piece)]
    usage.logprob_min, usage.logprob_mean = round(min(values), 4), round(float(np.mean(values)), 4)
    usage.logprob_key_min = round(min(key), 4) if key else 0.0


def option_shares(scores: dict[str, float]) -> dict[str, float]:
    """Logits or log-probabilities of some options as probabilities normalised over those options."""
    values = np.array(list(scores.values()))
    weights = np.exp(values - values.max())
    return {option: float(w) for option, w in zip(scores, weights / weights.sum(), strict=True)}


SERVER_PREFIX = "openai:"  # generator = "openai:<model>": an OpenAI-compatible server (rag/generators/openai_server.py)


def is_server_generator(name: str) -> bool:
    return name.startswith(SERVER_PREFIX)


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _softmax_over(logits: np.ndarray, option_ids: dict[str, int]) -> dict[str, float]:
    """The probabilities of the options' first tokens, normalised over the options only."""
    return option_shares({option: float(logits[i]) for option, i in option_ids.items()})


def _state_store(settings: Settings, name: str) -> StateStore:
    folder = settings.cache_dir / "states" / re.sub(r"[^A-Za-z0-9._-]+", "-", name)
    return StateStore(folder, settings.states_in_memory, settings.states_on_disk)


def _common_length(held: np.ndarray, tokens: list[int]) -> int:
    """How many leading tokens of `tokens` the context already holds (`held`: its tokens)."""
    limit = min(len(held), len(tokens))
    differs = np.flatnonzero(np.asarray(held[:limit]) != np.asarray(tokens[:limit], dtype=held.dtype))
    return int(differs[0]) if len(differs) else limit


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
