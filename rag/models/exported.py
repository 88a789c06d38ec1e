"""A sentence-transformers embedder exported once to an ONNX or OpenVINO graph, verified, and run from it (the
`embedder_backend` setting): the export lives beside the prepared model and is checked before every load."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import threading
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from rag.files import fsync_folder, partial_path, remove_stale_partials, write_text_atomically
from rag.models.assembly import file_sha256
from rag.models.registry import EMBEDDERS, ModelError
from rag.settings import Settings

log = logging.getLogger(__name__)

EXPORT_FORMAT = 1  # what an export folder holds; a folder of another format is exported again
MANIFEST = "rag-exported.json"
MIN_COSINE = 0.99  # every check text's vector against torch float32's, at export; below it the export is refused
# Embedded by torch (float32) and by the exported graph at export time: short and long, a query, a near-empty text.
CHECK_DOCUMENTS = (
    "South Korea's Ministry of Science and ICT will invest 1.02 trillion won in AI semiconductor R&D by 2027.",
    "The central bank raised its benchmark interest rate by a quarter point on Tuesday, citing persistent "
    "inflation in services, and signalled that further increases were possible if wage growth did not slow.",
    "x",
)
CHECK_QUERIES = ("How much will Korea spend on AI chips?",)
# The modules the exported graph reproduces; a model with any other (a Router, say) is not exported.
PLAIN_MODULES = {"Transformer", "Pooling", "Dense", "Normalize"}
DOCUMENT_PROMPTS = ("document", "passage", "corpus")  # the order sentence-transformers' encode_document tries
GRAPH_FILES = {"onnx": ("model.onnx", "model.onnx.data"), "openvino": ("model.xml", "model.bin")}
# The modules each backend needs to export (onnx, onnxscript) and run; all come with the extra of its name.
NEEDED = {"onnx": ("onnx", "onnxscript", "onnxruntime"), "openvino": ("onnx", "onnxscript", "openvino", "nncf")}


def require_runtime(backend: str) -> None:
    """ModelError naming the pip command when the backend's packages are not installed."""
    import importlib.util

    missing = [module for module in NEEDED[backend] if importlib.util.find_spec(module) is None]
    if missing:
        raise ModelError(f"embedder_backend {backend!r} needs {', '.join(missing)}: `pip install -e '.[{backend}]'` "
                         "(or embedder_backend = \"torch\")")


def export_variant(backend: str, precision: str) -> str:
    """The graph a backend and precision need: OpenVINO float32 and bfloat16 run the same float32 graph (the
    precision is a compile hint); int8 is its own graph (int8 weights). ONNX is float32 only."""
    return "int8" if precision == "int8" else "fp32"


def export_folder(name: str, location: str, settings: Settings, backend: str, precision: str) -> Path:
    """Where the export of an embedder is kept: beside the prepared model in the models folder, named by the
    registry name, or by a local folder's name and its path's digest."""
    if name in EMBEDDERS:
        base = EMBEDDERS[name].name
    else:
        resolved = str(Path(location).expanduser().resolve())
        base = f"{Path(resolved).name}-{hashlib.sha256(resolved.encode()).hexdigest()[:8]}"
    return settings.models_dir / f"{base}.{backend}-{export_variant(backend, precision)}"


def source_digest(location: str) -> str:
    """What the export was made from: every file of the model folder by relative name, size and modification
    time (the model files are verified by their own preparation; a changed file means a new export)."""
    root = Path(location)
    if not root.is_dir():
        raise ModelError(f"{location} is not a model folder: only a sentence-transformers folder can be exported")
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(root).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


# ---------------------------------------------------------------- verifying an export


def read_verified(folder: Path, backend: str, precision: str, source: str) -> dict | None:
    """The manifest of a complete, unchanged export in `folder` made from `source`; None when there is none.
    A manifest that names another format, backend, graph or source, or a listed file that is missing or whose
    SHA-256 differs (a stamp of size and modification time stands in for the hash once taken), is refused with
    the reason logged."""
    if not folder.is_dir():
        return None
    reason = _unverified_reason(folder, backend, precision, source)
    if reason is None:
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    log.warning("the export in %s is not used (%s): exporting again", folder, reason)
    return None


def _unverified_reason(folder: Path, backend: str, precision: str, source: str) -> str | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files = dict(manifest["files"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"no readable {MANIFEST}: {exc}"
    wanted = {"format": EXPORT_FORMAT, "backend": backend, "variant": export_variant(backend, precision),
              "source": source}
    differs = [key for key, value in wanted.items() if manifest.get(key) != value]
    if differs:
        return f"made with another {', '.join(differs)}"
    if set(files) != set(GRAPH_FILES[backend]):
        return f"it lists {sorted(files)}, not {list(GRAPH_FILES[backend])}"
    for relative, sha256 in files.items():
        path = folder / relative
        if not path.is_file():
            return f"{relative} is missing"
        if file_sha256(path) != sha256:
            return f"{relative} does not have the SHA-256 it was exported with"
    return None


def ensure_exported(name: str, location: str, settings: Settings, backend: str, precision: str) -> tuple[Path, dict]:
    """The verified export folder of an embedder for a backend and precision, and its manifest; exported (about
    two minutes for EmbeddingGemma on 2 cores) when missing, incomplete, changed or made from other model files.
    One process exports at a time (a lock beside the folder); only a complete, checked export is renamed into
    place."""
    from filelock import FileLock

    require_runtime(backend)
    folder = export_folder(name, location, settings, backend, precision)
    source = source_digest(location)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder.with_name(f".{folder.name}.lock"))):
        remove_stale_partials(folder.parent)
        manifest = read_verified(folder, backend, precision, source)
        if manifest is not None:
            return folder, manifest
        log.warning("exporting %s for %s (%s graph; once, about two minutes on 2 cores)…", name, backend,
                    export_variant(backend, precision))
        partial = partial_path(folder)
        shutil.rmtree(partial, ignore_errors=True)
        try:
            partial.mkdir(parents=True)
            manifest = _export(location, partial, backend, precision, source, settings)
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(partial, folder)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        fsync_folder(folder.parent)
    return folder, manifest


# ---------------------------------------------------------------- exporting


def _export(location: str, out: Path, backend: str, precision: str, source: str, settings: Settings) -> dict:
    """Export the model at `location` into `out`, check its vectors against torch float32's on the check texts,
    and write its manifest (last: a folder without one is never used)."""
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(location, device="cpu", local_files_only=True)  # float32: the reference
    model.eval()
    info = _plain_model_info(model, location)
    with torch.inference_mode():
        reference = np.concatenate([
            model.encode(list(CHECK_DOCUMENTS), prompt=info["prompts"]["document"], convert_to_numpy=True),
            model.encode(list(CHECK_QUERIES), prompt=info["prompts"]["query"], convert_to_numpy=True)])
    onnx_dir = out if backend == "onnx" else out / "onnx-scratch"
    onnx_dir.mkdir(exist_ok=True)
    _export_onnx(model, onnx_dir / "model.onnx")
    del model
    if backend == "openvino":
        _convert_openvino(onnx_dir / "model.onnx", out / "model.xml", export_variant(backend, precision))
        shutil.rmtree(onnx_dir)
    manifest = {"format": EXPORT_FORMAT, "backend": backend, "variant": export_variant(backend, precision),
                "source": source, **info, "versions": _versions(backend),
                "files": {name: file_sha256(out / name) for name in GRAPH_FILES[backend]}}
    graph = Graph(out, manifest, location, precision, settings.n_threads)
    found = np.concatenate([graph.encode(list(CHECK_DOCUMENTS), info["prompts"]["document"]),
                            graph.encode(list(CHECK_QUERIES), info["prompts"]["query"])])
    cosines = np.sum(_unit(found) * _unit(reference), axis=1)
    if float(cosines.min()) < MIN_COSINE:
        raise ModelError(f"the {backend} export of {location} gives vectors at cosine {cosines.min():.4f} of torch's "
                         f"(at least {MIN_COSINE} wanted); it was not kept: use embedder_backend = \"torch\"")
    manifest["check_cosines"] = [round(float(c), 6) for c in cosines]
    manifest["checked_precision"] = precision  # the precision the check ran at (float32 shares bfloat16's graph)
    write_text_atomically(out / MANIFEST, json.dumps(manifest, indent=1))
    return manifest


def _plain_model_info(model: Any, location: str) -> dict:
    """The dimension, token limit and prompts of a model the graph can reproduce; ModelError for any other."""
    kinds = [type(module).__name__ for module in model]
    if set(kinds) - PLAIN_MODULES or kinds[:1] != ["Transformer"]:
        raise ModelError(f"{location} has modules {kinds}: only Transformer, Pooling, Dense and Normalize are "
                         "exported; use embedder_backend = \"torch\"")
    if getattr(model[0], "do_lower_case", False):
        raise ModelError(f"{location} lowercases its input in sentence-transformers, which the exported graph does "
                         "not do; use embedder_backend = \"torch\"")
    if any(not getattr(module, "include_prompt", True) for module in model):
        raise ModelError(f"{location} pools without its prompt tokens, which the exported graph does not do; use "
                         "embedder_backend = \"torch\"")
    prompts = dict(model.prompts or {})
    document = next((prompts[key] for key in DOCUMENT_PROMPTS if key in prompts), "")
    return {"dim": int(model.get_embedding_dimension()), "max_tokens": int(model.max_seq_length),
            "prompts": {"document": document, "query": prompts.get("query", "")}}


def _export_onnx(model: Any, path: Path) -> None:
    """The whole model (transformer, pooling, dense layers, normalising) as one float32 ONNX graph taking token
    ids and the attention mask, with batch and sequence length free."""
    import torch

    class Whole(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.model({"input_ids": input_ids, "attention_mask": attention_mask})["sentence_embedding"]

    example = model.tokenizer(["a text of a few words", "another"], padding=True, return_tensors="pt")
    batch = torch.export.Dim("batch", min=1, max=4096)
    tokens = torch.export.Dim("tokens", min=2, max=max(int(model.max_seq_length), 2))
    with warnings.catch_warnings():  # the exporter's notes on axis names and deprecations: nothing to act on
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            Whole().eval(), (example["input_ids"], example["attention_mask"]), dynamo=True, verbose=False,
            input_names=["input_ids", "attention_mask"], output_names=["sentence_embedding"],
            dynamic_shapes={"input_ids": {0: batch, 1: tokens}, "attention_mask": {0: batch, 1: tokens}})
    program.save(str(path), external_data=True)  # model.onnx and model.onnx.data


def without_telemetry() -> None:
    """Keep OpenVINO's converter and nncf from sending usage data: both send it through openvino_telemetry when no
    consent file says otherwise (nncf asks no one), and both fall back to a silent stub when it cannot be imported.
    A None entry in sys.modules makes that import fail; nothing in the user's home is written."""
    if not isinstance(sys.modules.get("openvino_telemetry"), types.ModuleType):
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]


def _convert_openvino(onnx_path: Path, xml_path: Path, variant: str) -> None:
    """The ONNX graph as OpenVINO IR (float32 weights), or with int8 weights (per channel, asymmetric; the
    activations stay in floating point, so a text's vector does not depend on the texts batched with it)."""
    without_telemetry()
    import openvino as ov

    graph = ov.convert_model(str(onnx_path))
    if variant == "int8":
        import nncf

        graph = nncf.compress_weights(graph, mode=nncf.CompressWeightsMode.INT8_ASYM)
    ov.save_model(graph, str(xml_path), compress_to_fp16=False)


def _versions(backend: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("torch", "sentence-transformers", "onnxruntime" if backend == "onnx" else "openvino"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = ""
    return found


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


# ---------------------------------------------------------------- running an export


class Graph:
    """An exported graph loaded into its runtime, with the model's tokenizer: texts in, unit vectors out."""

    def __init__(self, folder: Path, manifest: dict, location: str, precision: str, threads: int) -> None:
        from transformers import AutoTokenizer

        self.manifest = manifest
        self.max_tokens = int(manifest["max_tokens"])
        self.tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=True)
        self._lock = threading.Lock()  # an OpenVINO infer request runs one batch at a time
        self._run = (_onnx_runner(folder / "model.onnx", threads) if manifest["backend"] == "onnx"
                     else _openvino_runner(folder / "model.xml", precision, threads))

    def encode(self, texts: list[str], prompt: str, batch_size: int = 32) -> np.ndarray:
        """Each text behind `prompt`, longest first in batches padded to their longest (as sentence-transformers
        batches), in the input order."""
        vectors = np.zeros((len(texts), int(self.manifest["dim"])), dtype=np.float32)
        order = np.argsort([-len(text) for text in texts], kind="stable")
        for start in range(0, len(texts), max(1, batch_size)):
            chosen = order[start:start + max(1, batch_size)]
            tokens = self.tokenizer([prompt + texts[i] for i in chosen], padding=True, truncation=True,
                                    max_length=self.max_tokens, return_tensors="np")
            with self._lock:
                vectors[chosen] = self._run(tokens["input_ids"].astype(np.int64),
                                            tokens["attention_mask"].astype(np.int64))
        return _unit(vectors)

    # what sentence-transformers' encode_document and encode_query take (tools that time raw encoding call these)
    def encode_document(self, texts: list[str], batch_size: int = 32, **_: Any) -> np.ndarray:
        return self.encode(texts, self.manifest["prompts"]["document"], batch_size)

    def encode_query(self, texts: list[str], batch_size: int = 32, **_: Any) -> np.ndarray:
        return self.encode(texts, self.manifest["prompts"]["query"], batch_size)


def _onnx_runner(path: Path, threads: int):  # noqa: ANN202 - (input_ids, attention_mask) -> vectors
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda ids, mask: session.run(None, {"input_ids": ids, "attention_mask": mask})[0]


def _openvino_runner(path: Path, precision: str, threads: int):  # noqa: ANN202 - (input_ids, attention_mask) -> vectors
    """The IR compiled for the CPU: float32 computes in f32; bfloat16 and int8 (int8 weights) compute in bf16 where
    the CPU has bf16 instructions (AVX512_BF16, AMX), else in f32."""
    without_telemetry()
    import openvino as ov

    core = ov.Core()
    has_bf16 = "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    hint = "bf16" if precision in ("bfloat16", "int8") and has_bf16 else "f32"
    compiled = core.compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                                     "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    return lambda ids, mask: request.infer({"input_ids": ids, "attention_mask": mask})[0].copy()
