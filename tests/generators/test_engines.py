"""The generator engines (llama.cpp and transformers) on the small packaged model: greedy answers, scoring, layer
outputs, kept and saved prompt states; and the stop filter, template clean-up and engine choice without a model."""

import os

import pytest

from rag.generators.base import StopFilter, clean_stream, complete, generate
from rag.generators.factory import get_generator, make_generator
from rag.generators.huggingface import TransformersGenerator
from rag.generators.llamacpp import LlamaCppGenerator
from rag.models.registry import ModelError
from rag.settings import Settings
from rag.types import Prefix, Usage
from tests.conftest import cache_with_models

SMALL = "qwen2.5-coder-0.5b"
PROMPT = [{"role": "system", "content": "Answer with one word."},
          {"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def engines():
    settings = Settings(generator=SMALL)
    return {engine: get_generator(settings.replace(engine=engine)) for engine in ("llama-cpp", "transformers")}


@pytest.mark.integration
@pytest.mark.slow
def test_both_engines_agree_on_a_greedy_answer(engines):
    assert isinstance(engines["llama-cpp"], LlamaCppGenerator)
    assert isinstance(engines["transformers"], TransformersGenerator)
    replies = {name: generate(g, PROMPT, max_tokens=12) for name, g in engines.items()}
    assert all("Paris" in reply for reply in replies.values()), replies
    assert replies["llama-cpp"].strip(" .") == replies["transformers"].strip(" .")


@pytest.mark.integration
@pytest.mark.slow
def test_both_engines_score_a_given_reply_and_give_a_hidden_state_alike(engines):
    """The probes' engine methods: the greedy reply is the likeliest text for both engines (every token near
    certain), an absurd one is not, and the hidden state has the model's width on both."""
    scores = {name: (g.continuation_logprobs(PROMPT, "Paris")[0], g.continuation_logprobs(PROMPT, "Banana")[0],
                     g.hidden_state(PROMPT)[0]) for name, g in engines.items()}
    for name, (paris, banana, state) in scores.items():
        assert sum(paris) > -1.0 > -5.0 > sum(banana), (name, paris, banana)
        assert state.shape == (896,) and float(abs(state).max()) > 0, name  # qwen2.5-coder-0.5b's hidden size


@pytest.mark.integration
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


@pytest.mark.unit
def test_stop_filter_holds_back_possible_stop_starts():
    stops = StopFilter(["STOP"])
    assert stops.feed("hello ST") == "hello "
    assert stops.feed("OP and more") == ""
    assert stops.stopped and stops.flush() == ""
    stops = StopFilter(["STOP"])
    assert stops.feed("a ST") + stops.feed("ay") + stops.flush() == "a STay"


@pytest.mark.unit
def test_template_tokens_are_stripped():
    assert "".join(clean_stream(iter(["Seoul<|im_", "end|> trailing"]), [])) == "Seoul"
    assert "".join(clean_stream(iter(["<|assistant|>Yes", " indeed"]), [])) == "Yes indeed"


@pytest.mark.unit
def test_engine_choices_are_checked(tmp_path):
    with pytest.raises(ModelError, match="unknown engine 'tensorrt'"):
        get_generator(Settings(engine="tensorrt"), SMALL)
    with pytest.raises(ModelError, match="needs a GGUF model"):
        get_generator(Settings(engine="llama-cpp"), "Qwen/Qwen2.5-0.5B-Instruct")
    with pytest.raises(ModelError, match="unknown generator 'no-such-model'"):
        get_generator(Settings(), "no-such-model")


# ---------------------------------------------------------------- kept prompt prefixes (saved states)

DOCUMENT = ("Passages:\n\n[1] (Bakery news)\nThe Mapo bakery sold 3,200 croissants on Sunday, its record. "
            "The shop opened in 2011. Its owner is Kim Ji-su. She plans a second shop in Incheon next spring.\n\n")
SYSTEM = "Answer from the passages."


def ask(generator, question: str, document: str = DOCUMENT, system: str = SYSTEM) -> tuple[str, Usage]:
    """The document first (the kept prefix), the question last, as `rag.answer` lays out its prompts."""
    varying = f"Question: {question}\nAnswer in a few words."
    messages = [{"role": "system", "content": system}, {"role": "user", "content": document + varying}]
    return complete(generator, messages, 16, prefix=Prefix(varying, persist=True, label="bakery"))


@pytest.fixture
def fresh_llama(tmp_path):
    """Makes a new llama.cpp generator (nothing in its context yet) whose saved states live in `tmp_path`."""
    cache = cache_with_models(tmp_path)
    return lambda: make_generator(SMALL, Settings(generator=SMALL, cache_dir=cache, context_tokens=1024))


def state_files(tmp_path) -> list:
    return sorted((tmp_path / "cache" / "states").rglob("*.state"))


@pytest.mark.integration
@pytest.mark.slow
def test_a_kept_prefix_leaves_only_the_new_tokens_to_process(fresh_llama):
    generator = fresh_llama()
    first, first_usage = ask(generator, "How many croissants were sold on Sunday?")
    assert "3,200" in first and first_usage.state == "computed"
    assert first_usage.evaluated_tokens == first_usage.prompt_tokens  # prefix and question, each once
    second, usage = ask(generator, "In which year did the shop open?")
    assert "2011" in second and usage.state == "context"
    question_part = generator.count_tokens("Question: In which year did the shop open?\nAnswer in a few words.")
    assert question_part <= usage.evaluated_tokens <= question_part + 6  # + the chat template's closing tokens
    assert usage.evaluated_tokens < 0.25 * usage.prompt_tokens


@pytest.mark.integration
@pytest.mark.slow
def test_a_given_reply_is_scored_as_the_engine_scored_it_while_generating(fresh_llama):
    """The probes that score a given text (the refusal sentence, a reply without its passages) read the same
    log-probabilities the engine reports for the tokens it samples, after the kept prefix, in one evaluation."""
    generator = fresh_llama()
    question = "How many croissants were sold on Sunday?"
    reply, usage = ask(generator, question)
    varying = f"Question: {question}\nAnswer in a few words."
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": DOCUMENT + varying}]
    scored, cost = generator.continuation_logprobs(messages, reply, Prefix(varying, persist=True, label="bakery"))
    assert cost.state == "context" and cost.evaluated_tokens <= generator.count_tokens(varying + reply) + 8
    assert len(scored) == generator.count_tokens(reply) and all(v <= 0 for v in scored)
    assert abs(sum(scored) / len(scored) - usage.logprob_mean) < 0.02, (scored, usage)
    invented, _ = generator.continuation_logprobs(messages, "The bakery sold 9,999 croissants.")
    assert sum(invented) < sum(scored) - 5  # a figure the passage does not give is far less likely
    again, _ = ask(generator, question)  # the context is left usable: the next answer is the same
    assert again == reply


@pytest.mark.integration
@pytest.mark.slow
def test_layer_outputs_where_the_prompt_ends_are_read_while_generating_at_no_cost(fresh_llama, engines):
    """The layers asked of a stream give their outputs at the prompt's last position, read while the prompt is
    processed (llama.cpp's eval callback): the reply and the tokens evaluated are those of a stream that asks none,
    the values are those a pass over the prompt gives (`hidden_state`), and the transformers engine gives the same
    layers of the same model alike."""
    generator = fresh_llama()
    question = "How many croissants were sold on Sunday?"
    varying = f"Question: {question}\nAnswer in a few words."
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": DOCUMENT + varying}]
    prefix = Prefix(varying, persist=True, label="bakery")
    complete(generator, messages, 16, prefix=prefix)  # the document's state is computed and kept
    plain, plain_usage = complete(generator, messages, 16, prefix=prefix)
    read, usage = complete(generator, messages, 16, prefix=prefix, layers=(3, 12))
    assert read == plain and usage.evaluated_tokens == plain_usage.evaluated_tokens and plain_usage.layer_states == {}
    assert sorted(usage.layer_states) == [3, 12] and all(len(v) == 896 for v in usage.layer_states.values())
    assert "layer_states" not in usage.to_dict()  # a usage record stays small
    _, passed = generator.hidden_state(messages, prefix, layers=(12,))
    assert cosine(passed.layer_states[12], usage.layer_states[12]) > 0.999
    assert cosine(usage.layer_states[3], usage.layer_states[12]) < 0.99  # two layers, two outputs
    alike = [g.hidden_state(PROMPT, layers=(12,))[1].layer_states[12] for g in engines.values()]
    assert cosine(*alike) > 0.9  # a quantised GGUF and its bfloat16 weights


@pytest.mark.integration
@pytest.mark.slow
def test_layer_outputs_over_the_reply_are_read_while_generating_for_fitting(fresh_llama):
    """`reply_layers` give their outputs over the reply as it is generated (the last evaluated token's, and the mean
    over the reply's tokens), recorded for fitting: the reply, the tokens evaluated and the prompt's own layer outputs
    are those of a stream that asks none, and a later pass reads its own layers again (nothing stays armed)."""
    generator = fresh_llama()
    question = "How many croissants were sold on Sunday?"
    varying = f"Question: {question}\nAnswer in one sentence."
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": DOCUMENT + varying}]
    prefix = Prefix(varying, persist=True, label="bakery")
    complete(generator, messages, 24, prefix=prefix)  # the document's state is computed and kept
    plain, plain_usage = complete(generator, messages, 24, prefix=prefix, layers=(12,))
    stream = generator.stream(messages, 24, prefix=prefix, layers=(12,), reply_layers=(3, 12))
    pieces = []
    while True:
        try:
            pieces.append(next(stream))
        except StopIteration as done:
            usage = done.value
            break
    assert "".join(pieces) == plain and usage.evaluated_tokens == plain_usage.evaluated_tokens
    assert plain_usage.reply_states == {} and usage.completion_tokens > 3
    assert usage.layer_states == plain_usage.layer_states  # the prompt's end is read as before
    last, mean = usage.reply_states["last"], usage.reply_states["mean"]
    assert sorted(last) == sorted(mean) == [3, 12] and all(len(v) == 896 for v in (*last.values(), *mean.values()))
    assert cosine(last[12], mean[12]) < 0.999 and cosine(last[12], usage.layer_states[12]) < 0.999
    assert "reply_states" not in usage.to_dict()
    _, passed = generator.hidden_state(messages, prefix, layers=(12,))  # a pass after it reads its own position
    assert cosine(passed.layer_states[12], plain_usage.layer_states[12]) > 0.999


def cosine(a: list[float], b: list[float]) -> float:
    import numpy as np

    a, b = np.asarray(a), np.asarray(b)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


OTHER_DOCUMENT = ("Passages:\n\n[1] (Harbour news)\nThe Busan ferry carried 910 passengers on Monday. "
                  "Its captain is Park Min-ho.\n\n")


def ask_afresh(generator, question: str, document: str) -> tuple[str, Usage]:
    """Retrieved passages as `rag.answer` reads them: a prefix kept in memory only, not saved."""
    varying = f"Question: {question}\nAnswer in a few words."
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": document + varying}]
    return complete(generator, messages, 16, prefix=Prefix(varying, persist=False))


@pytest.mark.integration
@pytest.mark.slow
def test_new_passages_after_another_prompt_process_only_what_differs(fresh_llama):
    """Passages never read before still share the instructions with the prompt in the context: only the tokens
    after the shared opening are processed, and the greedy answer is the one of a prompt processed whole."""
    generator = fresh_llama()
    ask_afresh(generator, "How many croissants were sold on Sunday?", DOCUMENT)
    answer, usage = ask_afresh(generator, "Who is the captain?", OTHER_DOCUMENT)
    assert usage.state == "computed" and "Park" in answer
    shared = generator.count_tokens(generator.render([{"role": "system", "content": SYSTEM},
                                                      {"role": "user", "content": "Passages:"}]))
    assert usage.evaluated_tokens <= usage.prompt_tokens - shared + 8  # the opening was not processed again
    whole, whole_usage = ask_afresh(fresh_llama(), "Who is the captain?", OTHER_DOCUMENT)  # nothing kept
    assert whole_usage.evaluated_tokens == whole_usage.prompt_tokens and whole == answer


@pytest.mark.integration
@pytest.mark.slow
def test_a_saved_state_is_restored_in_a_new_process_and_answers_the_same(fresh_llama, tmp_path):
    computed, usage = ask(fresh_llama(), "Where will the second shop open?")
    assert usage.state == "computed" and len(state_files(tmp_path)) == 1
    restored, usage = ask(fresh_llama(), "Where will the second shop open?")  # a new Llama: an empty context
    assert usage.state == "disk" and restored == computed and "Incheon" in restored
    assert usage.evaluated_tokens < 0.3 * usage.prompt_tokens


@pytest.mark.integration
@pytest.mark.slow
def test_after_another_prompt_the_state_comes_back_from_memory(fresh_llama):
    generator = fresh_llama()
    ask(generator, "How many croissants were sold on Sunday?")
    generate(generator, PROMPT, max_tokens=4)  # another prompt (a follow-up rewrite, say) takes the context
    answer, usage = ask(generator, "Who owns the bakery?")
    assert usage.state == "memory" and "Kim" in answer


@pytest.mark.integration
@pytest.mark.slow
def test_a_changed_document_or_prompt_is_not_answered_from_the_old_state(fresh_llama, tmp_path):
    generator = fresh_llama()
    ask(generator, "How many croissants were sold on Sunday?")
    answer, usage = ask(generator, "How many croissants were sold on Sunday?", DOCUMENT.replace("3,200", "4,100"))
    assert usage.state == "computed" and "4,100" in answer
    _, usage = ask(generator, "How many croissants were sold on Sunday?", system="Answer briefly from the passages.")
    assert usage.state == "computed"  # a new prompt version
    assert len(state_files(tmp_path)) == 3


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "foreign"])
def test_a_damaged_or_foreign_state_file_is_recomputed(fresh_llama, tmp_path, damage):
    expected, _ = ask(fresh_llama(), "In which year did the shop open?")
    [path] = state_files(tmp_path)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:  # another document's state under this document's name
        ask(fresh_llama(), "In which year did the shop open?", DOCUMENT.replace("Mapo", "Jongno"))
        os.replace(next(p for p in state_files(tmp_path) if p != path), path)
    answer, usage = ask(fresh_llama(), "In which year did the shop open?")
    assert usage.state == "computed" and answer == expected
    assert ask(fresh_llama(), "In which year did the shop open?")[1].state == "disk"  # saved again, whole


@pytest.mark.integration
@pytest.mark.slow
def test_transformers_reuses_a_kept_prefix_with_the_same_greedy_answer(engines):
    generator = engines["transformers"]
    cold, cold_usage = ask(generator, "Where will the second shop open?")
    warm, usage = ask(generator, "Where will the second shop open?")
    assert cold == warm and "Incheon" in warm
    assert cold_usage.state == "computed" and cold_usage.evaluated_tokens == cold_usage.prompt_tokens
    assert usage.state == "memory" and usage.evaluated_tokens < 0.3 * usage.prompt_tokens
