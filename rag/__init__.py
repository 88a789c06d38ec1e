"""Offline question answering over news articles with checked citations."""

import os

# Nothing in this library may reach a model hub or send telemetry; set before those libraries are imported.
for _name, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_DATASETS_OFFLINE": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_name, _value)

from rag.answering.flow import QuestionError, answer, stream_answer, warm_up  # noqa: E402
from rag.arguments import BadArgument  # noqa: E402
from rag.collection import ClosedCollection, Collection, aanswer, astream_answer  # noqa: E402
from rag.errors import BadInput, NotFound, RagError, TooLarge  # noqa: E402
from rag.retrieval import retrieve  # noqa: E402
from rag.settings import Settings, SettingsError, load_settings  # noqa: E402
from rag.types import Answer, ArticleInfo, Citation, IndexProgress, IndexReport, Passage, Retrieval  # noqa: E402

__all__ = [
    "Answer", "ArticleInfo", "BadArgument", "BadInput", "Citation", "ClosedCollection", "Collection",
    "IndexProgress", "IndexReport", "NotFound", "Passage", "QuestionError", "RagError", "Retrieval", "Settings",
    "SettingsError", "TooLarge", "aanswer", "answer", "astream_answer", "load_settings", "retrieve",
    "stream_answer", "warm_up",
]
