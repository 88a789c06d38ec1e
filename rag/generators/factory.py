"""Making the configured generator, once per process."""

from __future__ import annotations

from pathlib import Path

from rag.generators.base import (
    Generator,
    is_server_generator,
)
from rag.generators.huggingface import TransformersGenerator
from rag.generators.llamacpp import LlamaCppGenerator
from rag.loaded import Loaded
from rag.models.names import resolve_generator
from rag.models.registry import ModelError
from rag.settings import Settings


def make_generator(name: str, settings: Settings) -> Generator:
    """Pick the engine: an OpenAI-compatible server for "openai:<model>", llama.cpp for GGUF files unless told
    otherwise, transformers for HF models."""
    if is_server_generator(name):
        from rag.generators.openai_server import OpenAIServerGenerator  # needs the `scale` extra

        return OpenAIServerGenerator(name, settings)
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


_generators: Loaded[Generator] = Loaded()


def get_generator(settings: Settings, name: str | None = None) -> Generator:
    """The generator for `name` (default: the settings' one), loaded lazily and shared within the process."""
    name = name or settings.generator
    key = ("generator", name, settings.engine, settings.context_tokens, settings.n_threads, settings.cache_dir)
    return _generators.get(key, lambda: make_generator(name, settings))
