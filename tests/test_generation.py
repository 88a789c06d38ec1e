import pytest

from rag.generation import LlamaCppGenerator, StopFilter, TransformersGenerator, _clean_stream, generate
from rag.models import ModelError, get_generator
from rag.settings import Settings

SMALL = "qwen2.5-coder-0.5b"
PROMPT = [{"role": "system", "content": "Answer with one word."},
          {"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def engines():
    settings = Settings(generator=SMALL)
    return {engine: get_generator(settings.replace(engine=engine)) for engine in ("llama-cpp", "transformers")}


@pytest.mark.slow
def test_both_engines_agree_on_a_greedy_answer(engines):
    assert isinstance(engines["llama-cpp"], LlamaCppGenerator)
    assert isinstance(engines["transformers"], TransformersGenerator)
    replies = {name: generate(g, PROMPT, max_tokens=12) for name, g in engines.items()}
    assert all("Paris" in reply for reply in replies.values()), replies
    assert replies["llama-cpp"].strip(" .") == replies["transformers"].strip(" .")


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["llama-cpp", "transformers"])
def test_streaming_gives_pieces_and_honours_stop_and_max_tokens(engines, engine):
    generator = engines[engine]
    messages = [{"role": "user", "content": "Count from 1 to 30 separated by commas."}]
    pieces = list(generator.stream(messages, max_tokens=40, stop=["7,"]))
    assert len(pieces) > 3
    text = "".join(pieces)
    assert "6" in text and "7," not in text and "8" not in text
    assert "<|im_end|>" not in text and "<|im_start|>" not in text
    short = generate(generator, messages, max_tokens=5)
    assert generator.count_tokens(short) <= 6


def test_stop_filter_holds_back_possible_stop_starts():
    stops = StopFilter(["STOP"])
    assert stops.feed("hello ST") == "hello "
    assert stops.feed("OP and more") == ""
    assert stops.stopped and stops.flush() == ""
    stops = StopFilter(["STOP"])
    assert stops.feed("a ST") + stops.feed("ay") + stops.flush() == "a STay"


def test_template_tokens_are_stripped():
    assert "".join(_clean_stream(iter(["Seoul<|im_", "end|> trailing"]), [])) == "Seoul"
    assert "".join(_clean_stream(iter(["<|assistant|>Yes", " indeed"]), [])) == "Yes indeed"


def test_engine_choices_are_checked(tmp_path):
    with pytest.raises(ModelError, match="unknown engine 'tensorrt'"):
        get_generator(Settings(engine="tensorrt"), SMALL)
    with pytest.raises(ModelError, match="needs a GGUF model"):
        get_generator(Settings(engine="llama-cpp"), "Qwen/Qwen2.5-0.5B-Instruct")
    with pytest.raises(ModelError, match="unknown generator 'no-such-model'"):
        get_generator(Settings(), "no-such-model")
