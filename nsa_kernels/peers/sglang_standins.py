"""Stand-ins for the modules SGLang's backend import pulls in but this project does not install.

``sglang.srt.layers.attention.dsa_backend`` imports about 690 of SGLang's files; along the way
they import tokenizer, image, web-server, checkpoint and GPU-binary packages at module level
(model configs, the OpenAI protocol, quantization registries). None of them is reached by the
DSA metadata methods. A catch-all mock breaks (mocks end up used as decorators, enum members,
pydantic field types and base classes), so each absent module gets exactly the names the
import reads, each chosen so the import succeeds, and each with the reason it cannot change a
metadata tensor. A stand-in is installed only where the real module cannot be found, so a
machine that has the real package uses it.

``install()`` puts the stand-ins into ``sys.modules`` and returns the names it installed.
"""
import enum
import importlib.machinery
import importlib.util
import pickle
import sys
import types
from typing import Any


class _Placeholder:
    """A class to derive from, register and annotate with, that refuses to be constructed.

    Why it is safe: SGLang derives its model configs, tokenizers and processors from these and
    registers them at import; constructing one raises, so a metadata step that reached one
    would fail loudly instead of computing with it.
    """

    def __init__(self, *args, **kwargs):
        _unused()

    def __init_subclass__(cls, **kwargs):
        pass

    @classmethod
    def register(cls, *args, **kwargs):  # AutoConfig.register(...) and friends, at import
        return None


class _Registry(dict):
    """``CONFIG_MAPPING`` and the like: a dict with ``register`` and ``_extra_content``.

    Why it is safe: SGLang registers its model configs here at import; nothing reads them back
    on the metadata path.
    """

    def __init__(self):
        super().__init__()
        self._extra_content = {}

    def register(self, *args, **kwargs):
        return None


def _placeholder(name):
    return type(name, (_Placeholder,), {})


def _typed_dict(name):
    # openai's *Param types are TypedDicts; SGLang subclasses them with total=False and uses
    # them as pydantic field types, which pydantic accepts only from typing_extensions (< 3.12)
    import typing_extensions
    return typing_extensions.TypedDict(name, {}, total=False)


def _pydantic_model(name):
    # openai's response types are pydantic models that SGLang subclasses and uses as fields
    import pydantic
    return type(name, (pydantic.BaseModel,), {"__module__": "openai.types.responses"})


class _Logging:
    """``transformers.utils.logging``: ``get_logger`` is the stdlib's (module-level loggers)."""

    @staticmethod
    def get_logger(name=None):
        import logging
        return logging.getLogger(name)


def _gguf_quant_types():
    # gguf.GGMLQuantizationType: SGLang builds its GGUF dequant tables from the members
    names = ["F32", "F16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K", "Q3_K",
             "Q4_K", "Q5_K", "Q6_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL",
             "IQ3_S", "IQ2_S", "IQ4_XS", "IQ1_M", "BF16"]
    return enum.IntEnum("GGMLQuantizationType", names)


def _str_enum(name, members):
    return enum.Enum(name, {m: m.lower() for m in members}, type=str)


def _unused(*args, **kwargs):
    """A function SGLang binds at import and calls only in serving or checkpoint loading."""
    raise RuntimeError("stand-in called: this SGLang path is outside the metadata harness")


class _DeepGEMM:
    """DeepGEMM's schedule for the paged MQA logits kernel, as SGLang's metadata step calls it.

    Why it is safe: the schedule (``paged_mqa_schedule_metadata``) only tells DeepGEMM's
    logits kernel how to split work over SMs; it is not DSA metadata and the harness leaves it
    out of every comparison. The stand-in returns a constant schedule of the real shape
    ``[num_sms + 1, 2]`` int32, one allocation as the real call makes one launch.
    """

    @staticmethod
    def get_num_sms():
        import torch
        return torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count

    @staticmethod
    def get_paged_mqa_logits_metadata(context_lens, block_kv, num_sms):
        import torch
        return torch.zeros(num_sms + 1, 2, dtype=torch.int32, device=context_lens.device)


def _table():
    """module name -> {attribute: value}; every entry: imported at module level, never reached
    by the metadata methods (init_forward_metadata, _apply_cuda_graph_metadata)."""
    transformers_configs = [
        "AutoConfig", "AutoFeatureExtractor", "AutoImageProcessor", "AutoProcessor",
        "AutoTokenizer", "BaseImageProcessor", "BatchFeature", "DeepseekV3Config",
        "FalconMambaConfig", "Gemma4Config", "GenerationConfig", "GptOssConfig", "Lfm2Config",
        "Lfm2MoeConfig", "Lfm2VlConfig", "LlamaConfig", "LlamaTokenizerFast", "Mamba2Config",
        "MambaConfig", "MellumConfig", "PreTrainedTokenizer", "PreTrainedTokenizerBase",
        "PreTrainedTokenizerFast", "PretrainedConfig", "ProcessorMixin", "Qwen2Config",
        "Qwen2_5_VLProcessor", "Qwen3Config", "Qwen3MoeConfig", "WhisperConfig",
    ]
    transformers = {name: _placeholder(name) for name in transformers_configs}
    config_mapping = _Registry()
    transformers.update(CONFIG_MAPPING=config_mapping, TOKENIZER_MAPPING=_Registry())
    pil_resampling = enum.IntEnum("PILImageResampling", ["NEAREST", "LANCZOS", "BILINEAR",
                                                         "BICUBIC", "BOX", "HAMMING"])
    interpolation = _str_enum("InterpolationMode", ["NEAREST", "BILINEAR", "BICUBIC", "BOX",
                                                    "HAMMING", "LANCZOS"])
    openai_models = ["ResponseFunctionToolCall", "ResponseOutputMessage", "ResponseOutputText",
                     "ResponseReasoningItem", "ResponseTextConfig"]
    return {
        # tokenizers, model configs and processors: SGLang's model registry, never the backend
        "transformers": transformers,
        "transformers.configuration_utils": {
            "PretrainedConfig": transformers["PretrainedConfig"],
            "PreTrainedConfig": transformers["PretrainedConfig"]},
        "transformers.image_processing_backends": {"TorchvisionBackend":
                                                   _placeholder("TorchvisionBackend")},
        "transformers.image_processing_utils": {
            "BaseImageProcessor": transformers["BaseImageProcessor"],
            "BatchFeature": transformers["BatchFeature"]},
        "transformers.image_transforms": {"group_images_by_shape": _unused,
                                          "reorder_images": _unused},
        "transformers.image_utils": {"PILImageResampling": pil_resampling,
                                     "SizeDict": _placeholder("SizeDict"),
                                     "to_numpy_array": _unused},
        "transformers.models": {},
        "transformers.models.auto": {"CONFIG_MAPPING": config_mapping},
        "transformers.models.auto.configuration_auto": {"CONFIG_MAPPING": config_mapping},
        "transformers.models.auto.modeling_auto": {"MODEL_FOR_CAUSAL_LM_MAPPING_NAMES": {}},
        "transformers.models.glm_ocr": {},
        "transformers.models.glm_ocr.configuration_glm_ocr": {
            "GlmOcrVisionConfig": _placeholder("GlmOcrVisionConfig")},
        "transformers.models.qwen2": {"Qwen2Config": transformers["Qwen2Config"]},
        "transformers.models.siglip": {"SiglipVisionConfig": _placeholder("SiglipVisionConfig")},
        "transformers.processing_utils": {
            "ImagesKwargs": _placeholder("ImagesKwargs"),
            "MultiModalData": _placeholder("MultiModalData"),
            "ProcessingKwargs": _placeholder("ProcessingKwargs"),
            "ProcessorMixin": transformers["ProcessorMixin"]},
        "transformers.utils": {"TensorType": _str_enum("TensorType", ["PT", "NP"]),
                               "cached_file": _unused, "logging": _Logging},
        "transformers.utils.constants": {"IMAGENET_STANDARD_MEAN": [0.5, 0.5, 0.5],
                                         "IMAGENET_STANDARD_STD": [0.5, 0.5, 0.5]},
        "transformers.utils.hub": {"cached_file": _unused},
        "transformers.utils.logging": {"get_logger": _Logging.get_logger},
        # image preprocessing of multimodal models
        "torchvision": {},
        "torchvision.transforms": {"InterpolationMode": interpolation},
        "torchvision.transforms.functional": {"InterpolationMode": interpolation},
        # the OpenAI-compatible HTTP protocol's pydantic models (the server's entry points)
        "openai": {},
        "openai.types": {},
        "openai.types.responses": {
            **{name: _pydantic_model(name) for name in openai_models},
            "ResponseInputItemParam": Any, "ResponseOutputItem": Any},
        "openai.types.responses.easy_input_message_param": {
            "EasyInputMessageParam": _typed_dict("EasyInputMessageParam")},
        "openai.types.responses.response": {"ToolChoice": Any},
        "openai.types.responses.response_format_text_json_schema_config": {
            "ResponseFormatTextJSONSchemaConfig":
                _pydantic_model("ResponseFormatTextJSONSchemaConfig")},
        "openai.types.responses.response_function_tool_call_param": {
            "ResponseFunctionToolCallParam": _typed_dict("ResponseFunctionToolCallParam")},
        "openai.types.shared": {},
        "openai.types.shared.response_format_json_object": {
            "ResponseFormatJSONObject": _pydantic_model("ResponseFormatJSONObject")},
        # quantized checkpoint formats (weight loading)
        "compressed_tensors": {"CompressionFormat": _str_enum(
            "CompressionFormat", ["DENSE", "PACK_QUANTIZED", "FLOAT_QUANTIZED", "NAIVE_QUANTIZED",
                                  "INT_QUANTIZED", "NVFP4_PACK_QUANTIZED", "MARLIN_24"])},
        "compressed_tensors.config": {
            "CompressionFormat": None,  # filled below: the same enum as compressed_tensors'
            "SparsityCompressionConfig": _placeholder("SparsityCompressionConfig"),
            "SparsityStructure": _str_enum("SparsityStructure", ["TWO_FOUR", "UNSTRUCTURED"])},
        "compressed_tensors.quantization": {
            "ActivationOrdering": _str_enum("ActivationOrdering", ["GROUP", "WEIGHT"]),
            "QuantizationArgs": _placeholder("QuantizationArgs"),
            "QuantizationStrategy": _str_enum("QuantizationStrategy", [
                "TENSOR", "CHANNEL", "GROUP", "BLOCK", "TOKEN", "TENSOR_GROUP"]),
            "QuantizationType": _str_enum("QuantizationType", ["INT", "FLOAT"])},
        "gguf": {"GGMLQuantizationType": _gguf_quant_types()},
        "safetensors": {},
        "safetensors.torch": {"load": _unused, "save": _unused},
        "huggingface_hub": {"snapshot_download": _unused},
        # serialization of custom logit processors: SGLang pickles a class at import
        "dill": {"dumps": pickle.dumps, "loads": pickle.loads},
        # the HTTP server, JSON and tool-call parsing
        "starlette": {},
        "starlette.routing": {"Mount": _placeholder("Mount")},
        "orjson": {},
        "pybase64": {},
        "partial_json_parser": {},
        "partial_json_parser.core": {},
        "partial_json_parser.core.exceptions": {"MalformedJSON": type("MalformedJSON",
                                                                      (ValueError,), {})},
        "partial_json_parser.core.options": {"Allow": enum.IntFlag("Allow", ["STR", "OBJ"])},
        "sentencepiece": {},
        "einops": {"rearrange": _unused, "repeat": _unused},
        # the schedule of the indexer's logits kernel (GPU path only): see _DeepGEMM
        "deep_gemm": {"get_num_sms": _DeepGEMM.get_num_sms,
                      "get_paged_mqa_logits_metadata": _DeepGEMM.get_paged_mqa_logits_metadata},
        # modules a CUDA machine's import reaches (is_cuda() true): SGLang's own CUDA binaries
        # (norms, GEMMs, MoE, GGUF kernels of model layers) and DeepGEMM's layout helper
        "sgl_kernel": {name: _unused for name in (
            "fused_add_rmsnorm", "gemma_fused_add_rmsnorm", "gemma_rmsnorm", "int8_scaled_mm",
            "moe_sum", "moe_sum_reduce", "rmsnorm")},
        "sgl_kernel.quantization": {name: _unused for name in (
            "ggml_dequantize", "ggml_moe_a8", "ggml_mul_mat_a8", "ggml_mul_mat_vec_a8")},
        "deep_gemm.utils": {},
        "deep_gemm.utils.layout": {"get_mn_major_tma_aligned_tensor": _unused},
        # present on a developer machine, absent on a bare GPU host: process stats, HTTP,
        # images, notebooks display and the scheduler's ZeroMQ sockets
        "psutil": {},
        "requests": {},
        "requests.exceptions": {"RequestException": type("RequestException", (OSError,), {})},
        "PIL": {"ImageOps": _placeholder("ImageOps"),
                "UnidentifiedImageError": type("UnidentifiedImageError", (OSError,), {})},
        "PIL.Image": {"Image": _placeholder("Image")},
        "IPython": {},
        "IPython.display": {"HTML": _placeholder("HTML"), "display": _unused},
        "zmq": {"Socket": _placeholder("Socket")},
        "zmq.asyncio": {},
        "zmq.auth": {},
        "zmq.auth.thread": {"ThreadAuthenticator": _placeholder("ThreadAuthenticator")},
        "tqdm": {"tqdm": _placeholder("tqdm")},
        "tqdm.std": {"EMA": _placeholder("EMA")},
        # TVM's FFI (JIT kernels of other attention backends)
        "tvm_ffi": {"Module": _placeholder("Module"), "Object": _placeholder("Object")},
    }


def _absent(name):
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):  # a parent that is itself a stand-in, or half-installed
        return True


def install():
    """Install every stand-in whose real module is absent; return their names, sorted."""
    table = _table()
    table["compressed_tensors.config"]["CompressionFormat"] = (
        table["compressed_tensors"]["CompressionFormat"])
    installed = []
    for name in sorted(table):  # parents first
        root = name.split(".")[0]
        if name in sys.modules:
            continue
        if root != name and root not in installed:
            continue  # the real package is present: its submodules are real too
        if root == name and not _absent(name):
            continue
        module = types.ModuleType(name)
        module.__path__ = []  # a package, so submodule stand-ins can sit under it
        # a spec, so importlib.util.find_spec(name) answers instead of raising ValueError
        module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        module.__dict__.update(table[name])
        module.__nsa_standin__ = True
        sys.modules[name] = module
        if root != name:
            parent, _, leaf = name.rpartition(".")
            setattr(sys.modules[parent], leaf, module)
        installed.append(name)
    return installed
