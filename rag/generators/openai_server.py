"""Generation on an OpenAI-compatible server (vLLM, TGI, llama.cpp's server, Ollama) behind the Generator interface.

`generator = "openai:<model>"` with `openai_base_url` sends every prompt to that server as a streaming chat
completion; the API key is read from the environment variable named by `openai_api_key_env`, never from a file
of settings. `openai:` alone uses the first model the server lists. The prompts keep the layout of rag.answer
(instructions and document first, question last), so a server that caches prompt prefixes (llama.cpp's
`cache_prompt`, vLLM's prefix caching) processes only the question; the server, not this process, keeps that
state, so nothing is saved to disk here. Connection failures, timeouts, 429 and 5xx answers are retried by the
client (`max_retries`, with backoff) before any text has streamed; what still fails becomes a ServerError with a
message that says what to do.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from rag.errors import Unavailable
from rag.generators.base import END_OF_TURN, SERVER_PREFIX, Message, Stream, clean_stream, option_shares, timed_stream
from rag.models.registry import ModelError
from rag.settings import Settings
from rag.types import Prefix, Usage

if TYPE_CHECKING:
    import numpy as np

CHARS_PER_TOKEN = 3.0  # no standard endpoint counts tokens: a conservative estimate (English runs ~4 per token)
TOP_LOGPROBS = 20


class ServerError(ModelError, Unavailable):
    """The generator server could not be used (down, timed out, refused the key, busy, or broke off a reply)."""

    kind = Unavailable.kind  # a service the answer needs is down: 503 through the API


class OpenAIServerGenerator:
    """Chat completions from an OpenAI-compatible server; one request at a time per instance."""

    engine = "openai"

    def __init__(self, name: str, settings: Settings) -> None:
        self.name = name
        self.model = name[len(SERVER_PREFIX):]
        self.settings = settings
        self.usage = Usage()
        self._client: Any = None
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        """Make the client and ask the server for its models: a server that is down or refuses the key says so
        here, before any question. `openai:` without a model takes the first one listed."""
        if self._client is not None:
            return
        import openai  # the `scale` extra

        key = os.environ.get(self.settings.openai_api_key_env, "") or "none"
        client = openai.OpenAI(base_url=self.settings.openai_base_url, api_key=key,
                               timeout=self.settings.request_timeout_s, max_retries=self.settings.max_retries)
        listed = self._call(lambda: [m.id for m in client.models.list()])
        if not self.model:
            if not listed:
                raise ServerError(f"the generator server at {self.settings.openai_base_url} lists no model; "
                                  "name one: generator = \"openai:<model>\"")
            self.model = listed[0]
        self._client = client

    def count_tokens(self, text: str) -> int:
        return math.ceil(len(text) / CHARS_PER_TOKEN)

    def stream(self, messages: list[Message], max_tokens: int, stop: list[str] | None = None,
               prefix: Prefix | None = None, layers: tuple[int, ...] = (),
               reply_layers: tuple[int, ...] = ()) -> Stream:  # a server shows no layers
        self.warm_up()
        usage = Usage(prompt_tokens=self.count_tokens("".join(m["content"] for m in messages)), state="server")
        with self._lock:
            chunks = self._call(lambda: self._client.chat.completions.create(
                model=self.model, messages=messages, max_tokens=max_tokens, stream=True,
                stop=((stop or []) + END_OF_TURN)[:4],  # the OpenAI API takes at most four stop strings
                temperature=self.settings.temperature, seed=self.settings.seed,
                stream_options={"include_usage": True}))
            try:
                yield from timed_stream(clean_stream(self._pieces(chunks, usage), stop or []), usage)
            finally:
                chunks.close()  # a reply cut at a stop string (or abandoned) must not keep the server generating
            self.usage = usage
            return usage

    def prefill(self, messages: list[Message], prefix: Prefix) -> Usage:
        """One token's request, so that a server with a prompt cache has the prefix ready for the next question."""
        _, usage = self.option_probabilities(messages, ("Yes",), prefix)
        return usage

    def option_probabilities(self, messages: list[Message], options: tuple[str, ...],
                             prefix: Prefix | None = None) -> tuple[dict[str, float], Usage]:
        """From the `top_logprobs` of a one-token greedy reply; an option not among them counts as very unlikely."""
        self.warm_up()
        with self._lock:
            reply = self._call(lambda: self._client.chat.completions.create(
                model=self.model, messages=messages, max_tokens=1, temperature=0.0, seed=self.settings.seed,
                logprobs=True, top_logprobs=TOP_LOGPROBS))
        usage = self._usage_of(reply.usage)
        content = reply.choices[0].logprobs.content if reply.choices and reply.choices[0].logprobs else None
        if not content:
            raise ServerError(f"the generator server at {self.settings.openai_base_url} returns no logprobs, "
                              "which the verifier needs; set verify = false")
        logprobs: dict[str, float] = {}
        for entry in content[0].top_logprobs:  # "Yes" and " Yes" are both listed: keep the likelier
            logprobs[entry.token.strip()] = max(entry.logprob, logprobs.get(entry.token.strip(), -100.0))
        return option_shares({o: logprobs.get(o, -100.0) for o in options}), usage

    def continuation_logprobs(self, messages: list[Message], continuation: str,
                              prefix: Prefix | None = None) -> tuple[list[float], Usage]:
        """A chat server scores only the tokens it samples: the probes that need a given text's tokens do not run."""
        raise NotImplementedError("an OpenAI-compatible server does not score a given continuation")

    def hidden_state(self, messages: list[Message], prefix: Prefix | None = None, layers: tuple[int, ...] = (),
                     ) -> tuple[np.ndarray, Usage]:
        raise NotImplementedError("an OpenAI-compatible server does not return hidden states")

    def _pieces(self, chunks: Any, usage: Usage) -> Iterator[str]:
        """Text pieces of a streamed reply; the final chunk's usage (when the server sends one) fills `usage`."""
        import httpx
        import openai

        try:
            for chunk in chunks:
                if chunk.usage:
                    served = self._usage_of(chunk.usage)
                    usage.prompt_tokens, usage.completion_tokens = served.prompt_tokens, served.completion_tokens
                    usage.evaluated_tokens = served.evaluated_tokens
                if chunk.choices and chunk.choices[0].delta.content:
                    usage.completion_tokens += 1  # streaming servers send about one token a chunk
                    yield chunk.choices[0].delta.content
        except (openai.APIError, httpx.HTTPError) as exc:
            raise ServerError(f"the generator server at {self.settings.openai_base_url} broke off the reply: "
                              f"{exc}") from exc

    @staticmethod
    def _usage_of(served: Any) -> Usage:
        if served is None:
            return Usage(state="server")
        details = getattr(served, "prompt_tokens_details", None)
        cached = (getattr(details, "cached_tokens", 0) or 0) if details else 0
        return Usage(prompt_tokens=served.prompt_tokens, evaluated_tokens=served.prompt_tokens - cached,
                     state="server", completion_tokens=served.completion_tokens or 0)

    def _call(self, request: Any) -> Any:
        """Run one request, turning the client's errors (after its own bounded retries) into a ServerError."""
        import openai

        where = self.settings.openai_base_url
        try:
            return request()
        except openai.AuthenticationError as exc:
            raise ServerError(f"the generator server at {where} refused the API key (401): put the server's key "
                              f"in the environment variable {self.settings.openai_api_key_env}") from exc
        except openai.RateLimitError as exc:
            raise ServerError(f"the generator server at {where} is busy (429) after {self.settings.max_retries} "
                              "retries: try again later") from exc
        except openai.NotFoundError as exc:
            raise ServerError(f"the generator server at {where} has no model {self.model!r} (404)") from exc
        except openai.APITimeoutError as exc:
            raise ServerError(f"the generator server at {where} did not answer within "
                              f"{self.settings.request_timeout_s:g} s (setting request_timeout_s)") from exc
        except openai.APIConnectionError as exc:
            raise ServerError(f"cannot reach the generator server at {where} (setting openai_base_url): "
                              f"{exc.__cause__ or exc}") from exc
        except openai.APIStatusError as exc:
            raise ServerError(f"the generator server at {where} answered {exc.status_code}: {exc.message}") from exc
