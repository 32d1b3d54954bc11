"""Variants of an exported ONNX graph: ``--optimize O1|O2|O3``, ``--quantize int8|int4``, ``--dtype fp16|bf16``.

Each variant is a further step of the export: the fp32 graph is written as usual, then its file in the staging
folder is transformed in place with onnxruntime's own tools, and only the variant's files remain. The variant is
validated like any export (the plan part's scenarios, with a stated looser `Tolerance` where the variant changes
the numbers) and by task-level checks (`exporter_validate.task_checks`).

- ``--optimize``: onnxruntime's transformer optimizer (``onnxruntime.transformers.optimizer``) for the model types
  it knows (`OPTIMIZER_MODEL_TYPES`). O1: fusions that keep the arithmetic (LayerNormalization, Gelu,
  SkipLayerNormalization, BiasGelu); O2: every fusion (attention, embedding layer norm, rotary embeddings) as well;
  O3: O2 with GELU replaced by its tanh approximation (FastGelu), which changes activations by up to ~1e-3.
  For BERT-like graphs the padding mask Transformers 5 builds is first rewritten into a form the attention fusion
  matches (`exporter_onnx.padding_masks`, proven equal on probe masks), and the fused Attention reads the raw 2-D mask
  (any padding); every layer's attention is then one ``Attention`` node (ALBERT: all but the first, whose residual
  input is the embedding projection's Add; MPNet: none, its relative position bias is not a pattern the fusion has).
  ``--device cuda`` lets the optimizer choose the fusions of the CUDA execution provider; the graph is still
  validated here on the CPU, and refused when the CPU cannot run an operator the fusions wrote.
- ``--quantize int8``: ``quantize_dynamic`` with per-channel int8 weights; with ``--calibration FILE`` (sentences,
  one a line, tokenized with the checkpoint's tokenizer) ``quantize_static`` in QDQ form. ``--quantize int4``:
  ``MatMulNBitsQuantizer``, weight-only, symmetric, in blocks of ``--block-size`` (32) along the input dimension.

  Why dynamic per-channel int8 stays the default although it misses the 0.99 cosine on all-MiniLM-L6-v2 (measured
  2026-12-01, onnxruntime 1.32 on 2 AVX-512 cores; min cosine of the mean-pooled embeddings of the task check's
  six real sentences / of their real-position token vectors; file size x fp32; 8x128 latency, fp32 139 ms):

  ===========================================================  =======================  =====  ========
  scheme                                                       sentences/tokens         size   8x128
  ===========================================================  =======================  =====  ========
  dynamic, per-channel int8 weights (the default)              0.9825/0.9741            0.255  66 ms
  the same with ``reduce_range``                               0.9705/0.9496            0.255  61 ms
  MatMuls only (embedding tables left fp32)                    0.9799/0.9670            0.649  61 ms
  embedding tables only                                        0.9996/0.9992            0.605  136 ms
  one projection kind fp32 in every layer (q, k, v or output)  0.976-0.981/0.962-0.975  0.284  68-84 ms
  feed-forward input MatMuls fp32 in every layer               0.9853/0.9761            0.371  99 ms
  feed-forward output MatMuls fp32 in every layer              0.9892/0.9828            0.372  90 ms
  one layer's feed-forward output fp32                         0.980-0.986/0.972-0.977  0.274  65-72 ms
  weight-only int8 (MatMulNBits, blocks of 32, int8 compute)   0.9991/0.9990            0.663  154 ms
  the same, blocks of 128                                      0.9971/0.9968            0.652  134 ms
  outlier channels moved from layer norms into the weights     0.984-0.986/0.975-0.980  0.255  62-81 ms
  ===========================================================  =======================  =====  ========

  The error comes from quantizing each MatMul's activations to 8 bits with one range per tensor, and it is spread
  over every projection: no choice of MatMuls left in fp32 that keeps the file under 0.3x reaches 0.99, nor does
  dividing each layer norm's output channels by a scale taken into the next weights (SmoothQuant's migration,
  scales from the norm's own gain and bias, as no data is at hand: the row above), and the
  accurate weight-only scheme is no faster than fp32 here (its embedding tables cannot be 8-bit either). So the
  default keeps the fast, small scheme, and the task check fails it on checkpoints like MiniLM, as it should;
  ``--quantize int8`` with ``--keep-invalid`` keeps such a file for those who accept cosine ~0.98.
- ``--dtype fp16``: ``convert_float_to_float16`` with the inputs and outputs kept float32. ``bf16`` is refused when
  the installed onnxruntime has no CPU kernel for bfloat16 arithmetic (the graph could not be validated here).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter_core.backend import Tolerance
from exporter_core.errors import InvalidArgumentError, UnsupportedFeatureError, did_you_mean, option_hint
from exporter_onnx.convert import save_with_external_data
from exporter_onnx.padding_masks import rewrite_padding_masks
from exporter_validate.task_checks import Thresholds

if TYPE_CHECKING:  # pragma: no cover
    import onnx

    from exporter_core.plan import PlanPart

__all__ = [
    "AUTO_FP16_MAX_BYTES",
    "DEFAULT_BLOCK_SIZE",
    "DEVICES",
    "DTYPES",
    "OPTIMIZER_MODEL_TYPES",
    "OPTIMIZE_LEVELS",
    "QUANTIZE_KINDS",
    "VariantOptions",
    "apply_variant",
    "bf16_refusal",
    "check_variant_options",
    "optimizer_refusal",
    "with_checkpoint_dtype",
]

OPTIMIZE_LEVELS = ("O1", "O2", "O3")
QUANTIZE_KINDS = ("int8", "int4")
DTYPES = ("fp32", "fp16", "bf16")
DEVICES = ("cpu", "cuda")
DEFAULT_BLOCK_SIZE = 32

#: Transformers ``model_type`` -> the model type onnxruntime's transformer optimizer has fusions for. A type it does
#: not know is refused: its fusion patterns are written for other graphs, and a level that fuses nothing would
#: promise a speed-up it does not give.
OPTIMIZER_MODEL_TYPES: dict[str, str] = {
    **dict.fromkeys(
        ("bert", "roberta", "xlm-roberta", "camembert", "distilbert", "electra", "data2vec-text", "mpnet", "albert"),
        "bert",
    ),
    "gpt2": "gpt2",
    "gpt_neox": "gpt_neox",
    "phi": "phi",
    "qwen3": "qwen3",
    **dict.fromkeys(("t5", "mt5"), "t5"),
    **dict.fromkeys(("bart", "mbart"), "bart"),
    **dict.fromkeys(("vit", "deit"), "vit"),
    "clip": "clip",
    "swin": "swin",
}

#: Looser tolerances of the variants that change the numbers (``atol + rtol * max|reference|`` per output). Worst
#: measured |difference| / max|reference| on tiny BERT (onnxruntime 1.32): fp16 6.6e-4, int8 7.2e-3 (hidden states)
#: and 1.9e-2 (classification logits), int4 2.0e-3. The bounds are far wider, since real checkpoints have outliers
#: the tiny ones lack: they catch a broken graph, and the task checks are the bar for accuracy.
_TOLERANCES = {
    "O3": Tolerance(1e-3, 5e-3, "O3 replaces GELU by its tanh approximation (FastGelu)"),
    "fp16": Tolerance(1e-3, 2e-2, "fp16 keeps 11 significant bits of every weight and activation"),
    "int8": Tolerance(1e-2, 0.25, "int8 weights (and activations) carry 8 bits, ~0.4% of each channel's range"),
    "int4": Tolerance(1e-2, 0.5, "int4 weights carry 16 levels per block of the input dimension"),
}


@dataclass(frozen=True)
class VariantOptions:
    """The variant the ONNX backend writes instead of the plain fp32 graph."""

    optimize: str | None = None
    quantize: str | None = None
    dtype: str | None = None
    calibration: Path | None = None
    block_size: int = DEFAULT_BLOCK_SIZE
    device: str = "cpu"

    @property
    def active(self) -> bool:
        """True when the export is more than the plain fp32 graph."""
        return bool(self.optimize or self.quantize or self.dtype not in (None, "fp32"))

    @property
    def label(self) -> str:
        """``O2+int8``, ``fp16``, ... (empty for the plain graph)."""
        steps = [self.optimize, self.dtype if self.dtype != "fp32" else None, self.quantize]
        return "+".join(step for step in steps if step)

    def tolerance(self) -> Tolerance | None:
        """The loosest tolerance of the steps that change the numbers; None when every step keeps fp32 arithmetic."""
        found = [_TOLERANCES[step] for step in (self.optimize, self.dtype, self.quantize) if step in _TOLERANCES]
        if not found:
            return None
        atol = max(t.atol for t in found)
        rtol = max(t.rtol for t in found)
        return Tolerance(atol, rtol, "; ".join(t.reason for t in found))

    def thresholds(self) -> Thresholds:
        """What the task checks require of this variant (`exporter_validate.task_checks` says why int4 differs)."""
        if self.quantize == "int4":
            # A random-weight 156M Llama shape (the hardest case: no confident logits) gives logit vectors at
            # cosine >= 0.93 and cache vectors >= 0.89; a broken quantization scores near 0.
            return Thresholds(
                min_cosine=0.8,
                top1_agreement=None,
                min_logit_cosine=0.8,
                reason="int4 weight-only quantization flips near-tied argmaxes by design: next-token top-1 "
                "agreement is reported, the direction of every logit, hidden-state and cache vector (cosine >= 0.8) "
                "is required",
            )
        return Thresholds()

    def options(self) -> dict[str, Any]:
        """The backend options that give this variant (checked again, they give it again)."""
        return {
            "optimize": self.optimize,
            "quantize": self.quantize,
            "dtype": self.dtype,
            "calibration": str(self.calibration) if self.calibration else None,
            "block_size": self.block_size if self.quantize == "int4" else None,
            "device": self.device,
        }


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str | None:
    if value is None or value == "":
        return None
    text = str(value)
    for choice in choices:
        if text.lower() == choice.lower():
            return choice
    raise InvalidArgumentError(
        f"unknown {name} {text!r}{did_you_mean(text, choices)}; use one of {', '.join(choices)}, for example "
        f"{option_hint(name, choices[0])}"
    )


def bf16_refusal() -> str | None:
    """Why a bfloat16 graph cannot be validated with the installed onnxruntime on the CPU, or None when it can."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    for op in ("MatMul", "Add"):
        graph = helper.make_graph(
            [helper.make_node(op, ["a", "b"], ["y"])],
            "probe",
            [helper.make_tensor_value_info(n, TensorProto.BFLOAT16, [2, 2]) for n in ("a", "b")],
            [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [2, 2])],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        try:
            ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        except Exception:  # onnxruntime raises its own NOT_IMPLEMENTED type
            return (
                f"onnxruntime {ort.__version__} has no CPU kernel for bfloat16 {op}, so a bf16 graph could not be "
                f"validated here; use {option_hint('dtype', 'fp16')} (or export fp32)"
            )
    return None


def check_variant_options(options: Mapping[str, Any]) -> VariantOptions:
    """The variant options, or one-line refusals of mistakes (before any model is loaded)."""
    optimize = _choice("optimize", options.get("optimize"), OPTIMIZE_LEVELS)
    quantize = _choice("quantize", options.get("quantize"), QUANTIZE_KINDS)
    dtype = _choice("dtype", options.get("dtype"), DTYPES)
    device = _choice("device", options.get("device"), DEVICES) or "cpu"
    if quantize and dtype in ("fp16", "bf16"):
        raise InvalidArgumentError(
            f"{option_hint('quantize', quantize)} quantizes the fp32 graph's weights and cannot be combined with "
            f"{option_hint('dtype', dtype)}; choose one"
        )
    if dtype == "bf16":
        reason = bf16_refusal()
        if reason:
            raise InvalidArgumentError(f"{option_hint('dtype', 'bf16')} is refused: {reason}")
    if device == "cuda" and not optimize:
        raise InvalidArgumentError(
            f"{option_hint('device', 'cuda')} chooses the fusions of --optimize for the CUDA execution provider; "
            f"add {option_hint('optimize', 'O2')} (or leave --device out)"
        )
    block_size = options.get("block_size")
    if block_size is not None and quantize != "int4":
        raise InvalidArgumentError(
            f"block_size applies to {option_hint('quantize', 'int4')} only; leave it out or add that option"
        )
    try:
        size = DEFAULT_BLOCK_SIZE if block_size is None else int(block_size)
    except (TypeError, ValueError):
        size = 0
    if isinstance(block_size, bool) or size < 16 or size & (size - 1):
        raise InvalidArgumentError(
            f"block_size must be a power of two, 16 or more, got {block_size!r}; for example "
            f"{option_hint('block_size', DEFAULT_BLOCK_SIZE)}"
        )
    calibration = options.get("calibration")
    calibration_path = None
    if calibration not in (None, ""):
        if quantize != "int8":
            raise InvalidArgumentError(
                f"calibration sentences serve {option_hint('quantize', 'int8')} (static quantization) only; "
                "leave it out or add that option"
            )
        calibration_path = Path(str(calibration)).expanduser()
        if not calibration_path.is_file():
            raise InvalidArgumentError(f"calibration file {calibration_path} does not exist or is not a file")
        if not _calibration_sentences(calibration_path):
            raise InvalidArgumentError(
                f"calibration file {calibration_path} holds no sentence; write one sentence a line"
            )
    return VariantOptions(optimize, quantize, dtype, calibration_path, size, device)


def optimizer_refusal(model_type: str) -> str | None:
    """Why ``--optimize`` cannot serve `model_type` (onnxruntime's optimizer has no fusions for it), or None."""
    if model_type in OPTIMIZER_MODEL_TYPES:
        return None
    known = ", ".join(sorted(OPTIMIZER_MODEL_TYPES))
    return (
        f"--optimize: onnxruntime's transformer optimizer has no fusions for model type {model_type!r}; it serves "
        f"{known}; export without --optimize (onnxruntime still applies its generic optimizations when it loads "
        "the file)"
    )


def _calibration_sentences(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@contextlib.contextmanager
def _quiet_onnxruntime_tools() -> Iterator[None]:
    """Keep the quantization and optimizer tools' advice (logged on the root logger) out of the export log."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _files_of(path: Path) -> list[Path]:
    """The ONNX file and its external data files."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    names: set[str] = set()
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            names.update(entry.value for entry in tensor.external_data if entry.key == "location")
    return [path, *(path.parent / name for name in sorted(names))]


def _size(files: list[Path]) -> int:
    return sum(f.stat().st_size for f in files if f.is_file())


def _attention_sizes(part: PlanPart | None) -> tuple[int, int]:
    """(heads, hidden size) of the model, for the fusions to check the graph's against; 0 where unknown (detect)."""
    if part is None:
        return 0, 0
    view = part.config.model_view
    try:
        return view.num_attention_heads, view.hidden_size
    except AttributeError:
        return 0, 0


def _optimize(
    path: Path, variant: VariantOptions, model_type: str, facts: dict[str, Any], part: PlanPart | None = None
) -> onnx.ModelProto:
    import onnx
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    kind = OPTIMIZER_MODEL_TYPES[model_type]
    fusion = FusionOptions(kind)
    if variant.optimize == "O1":
        fusion.enable_attention = False
        fusion.enable_embed_layer_norm = False
        fusion.enable_rotary_embeddings = False
    fusion.enable_gelu_approximation = variant.optimize == "O3"
    model = onnx.load(str(path))
    heads, hidden = 0, 0
    masks = 0
    if kind == "bert" and fusion.enable_attention:
        # The fused Attention reads the raw 2-D mask, which serves any padding (left, right, holes) as the model
        # does; the optimizer's default for BERT, a per-row length, assumes right padding.
        fusion.use_raw_attention_mask(True)
        masks = rewrite_padding_masks(model)
        # Transformers 5 reshapes heads as (batch, sequence, -1, head size): the fusion cannot read the number of
        # heads from the graph, so it is given the model's.
        heads, hidden = _attention_sizes(part)
    gpu = variant.device == "cuda"
    with _quiet_onnxruntime_tools():
        optimized = optimize_model(
            model,
            model_type=kind,
            num_heads=heads,
            hidden_size=hidden,
            optimization_options=fusion,
            opt_level=0,
            use_gpu=gpu,
            provider="cuda" if gpu else None,
        )
    stats = optimized.get_fused_operator_statistics()
    facts["optimize"] = {
        "level": variant.optimize,
        "optimizer_model_type": kind,
        "device": variant.device,
        "fused_operators": {name: count for name, count in stats.items() if count},
    }
    if masks:
        facts["optimize"]["padding_masks_rewritten"] = masks
    return optimized.model


def _calibration_reader(sentences: list[str], preprocessor: Any, input_names: list[str]) -> Any:
    import numpy as np
    from onnxruntime.quantization import CalibrationDataReader

    if preprocessor is None or not callable(preprocessor) or not hasattr(preprocessor, "convert_tokens_to_ids"):
        raise UnsupportedFeatureError(
            "--calibration: the checkpoint has no tokenizer to turn the calibration sentences into inputs"
        )
    feeds = []
    for sentence in sentences:
        encoded = {name: np.asarray(value) for name, value in preprocessor(sentence, return_tensors="np").items()}
        if "token_type_ids" in input_names and "token_type_ids" not in encoded and "input_ids" in encoded:
            encoded["token_type_ids"] = np.zeros_like(encoded["input_ids"])  # one segment: segment 0 throughout
        missing = [name for name in input_names if name not in encoded]
        if missing:
            raise UnsupportedFeatureError(
                f"--calibration: the graph also takes {', '.join(missing)}, which tokenized sentences do not give; "
                "static quantization serves text models fed by their tokenizer alone (use dynamic int8 instead)"
            )
        feeds.append({name: np.asarray(encoded[name]).astype(np.int64) for name in input_names})

    class SentenceReader(CalibrationDataReader):
        """The tokenized calibration sentences, one at a time."""

        def __init__(self) -> None:
            self._feeds = iter(feeds)

        def get_next(self) -> dict[str, Any] | None:
            return next(self._feeds, None)

    return SentenceReader()


def _quantize_int8(
    model: onnx.ModelProto, work: Path, variant: VariantOptions, preprocessor: Any, facts: dict[str, Any]
) -> onnx.ModelProto:
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    source = work / "source.onnx"
    target = work / "quantized.onnx"
    onnx.save_model(model, str(source), save_as_external_data=True, location="source.onnx.data")
    with _quiet_onnxruntime_tools():
        if variant.calibration is None:
            quantize_dynamic(
                source, target, per_channel=True, weight_type=QuantType.QInt8, use_external_data_format=True
            )
            facts["quantize"] = {"kind": "int8", "mode": "dynamic", "weights": "int8 per channel"}
        else:
            sentences = _calibration_sentences(variant.calibration)
            reader = _calibration_reader(sentences, preprocessor, [i.name for i in model.graph.input])
            quantize_static(
                source,
                target,
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                weight_type=QuantType.QInt8,
                activation_type=QuantType.QUInt8,
                use_external_data_format=True,
            )
            facts["quantize"] = {
                "kind": "int8",
                "mode": "static (QDQ)",
                "weights": "int8 per channel",
                "activations": "uint8, ranges calibrated",
                "calibration": {"file": str(variant.calibration), "sentences": len(sentences)},
            }
    quantized = onnx.load(str(target))
    facts["quantize"]["quantized_nodes"] = _count(quantized, ("MatMulInteger", "ConvInteger", "DynamicQuantizeLinear"))
    facts["quantize"]["quantized_nodes"] += _count(quantized, ("DequantizeLinear",))
    return quantized


def _quantize_int4(model: onnx.ModelProto, variant: VariantOptions, facts: dict[str, Any]) -> onnx.ModelProto:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    with _quiet_onnxruntime_tools():
        # Embedding tables too (Gather -> GatherBlockQuantized, blocks along the hidden axis): in a decoder the
        # vocabulary's tables are a fifth of a 150M model's weights, and left in fp32 they alone keep the file at
        # a third of the fp32 one.
        quantizer = MatMulNBitsQuantizer(
            model,
            bits=4,
            block_size=variant.block_size,
            is_symmetric=True,
            op_types_to_quantize=("MatMul", "Gather"),
            quant_axes=(("MatMul", 0), ("Gather", 1)),
            nodes_to_exclude=_gathers_not_over_tables(model),
        )
        quantizer.process()
    quantized = quantizer.model.model
    count = _count(quantized, ("MatMulNBits",))
    if not count:
        raise UnsupportedFeatureError(
            "--quantize int4: the graph has no MatMul with constant weights for MatMulNBits to quantize (linear "
            "layers written as Gemm are left alone); use --quantize int8"
        )
    facts["quantize"] = {
        "kind": "int4",
        "mode": "weight-only (MatMulNBits; embedding tables GatherBlockQuantized)",
        "weights": f"int4 symmetric, blocks of {variant.block_size}",
        "quantized_nodes": count,
        "quantized_tables": _count(quantized, ("GatherBlockQuantized",)),
    }
    return quantized


def _gathers_not_over_tables(model: onnx.ModelProto) -> list[str]:
    """Gather nodes whose data is not a float initializer of rank 2 or more (index lists, shape lookups): the
    int4 quantizer would take them for embedding tables and fail on rank 1 or quantize integers."""
    from onnx import TensorProto

    floats = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16}
    tables = {t.name for t in model.graph.initializer if t.data_type in floats and len(t.dims) >= 2}
    # Unnamed nodes cannot be excluded by name (and an empty name would exclude every unnamed node).
    return [n.name for n in model.graph.node if n.op_type == "Gather" and n.input[0] not in tables and n.name]


def _count(model: onnx.ModelProto, op_types: tuple[str, ...]) -> int:
    return sum(1 for node in model.graph.node if node.op_type in op_types)


def _to_fp16(model: onnx.ModelProto, facts: dict[str, Any]) -> onnx.ModelProto:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with _quiet_onnxruntime_tools():
        converted = convert_float_to_float16(model, keep_io_types=True)
    facts["dtype"] = {"dtype": "fp16", "io_types": "float32 (kept)"}
    return converted


def apply_variant(
    path: Path, variant: VariantOptions, *, model_type: str, part: PlanPart, preprocessor: Any
) -> dict[str, Any]:
    """Replace the fp32 graph at `path` (and its external data) by `variant`; return the facts for the metadata.

    Raises `UnsupportedFeatureError` with the reason when the variant cannot be written or not run on the CPU.
    """
    import onnx
    import onnxruntime as ort

    if variant.optimize and (reason := optimizer_refusal(model_type)):
        raise UnsupportedFeatureError(reason)
    old_files = _files_of(path)
    fp32_bytes = _size(old_files)
    external = len(old_files) > 1
    facts: dict[str, Any] = {"variant": variant.label, "options": variant.options()}
    with tempfile.TemporaryDirectory(prefix=".variant-", dir=path.parent) as folder:
        work = Path(folder)
        model = _optimize(path, variant, model_type, facts, part) if variant.optimize else onnx.load(str(path))
        if variant.dtype == "fp16":
            model = _to_fp16(model, facts)
        if variant.quantize == "int8":
            model = _quantize_int8(model, work, variant, preprocessor, facts)
        elif variant.quantize == "int4":
            model = _quantize_int4(model, variant, facts)
        for old in old_files:
            old.unlink(missing_ok=True)
        weights = sum(len(t.raw_data) for t in model.graph.initializer)
        if external or weights > 1 << 30:
            save_with_external_data(model, path)
        else:
            onnx.save_model(model, str(path))
    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsupportedFeatureError(
            f"the {variant.label} variant cannot run on onnxruntime {ort.__version__}'s CPU, so it could not be "
            f"validated here: {first}"
        ) from exc
    variant_bytes = _size(_files_of(path))
    facts["sizes"] = {
        "fp32_bytes": fp32_bytes,
        "variant_bytes": variant_bytes,
        "ratio": round(variant_bytes / fp32_bytes, 4) if fp32_bytes else None,
    }
    tolerance = variant.tolerance()
    facts["tolerance"] = tolerance.to_dict() if tolerance is not None else "the architecture's (fp32 arithmetic)"
    facts["tools"] = {"onnxruntime": ort.__version__, "onnx": onnx.__version__}
    return facts


#: Largest float32 graph (bytes of weights) the fp16 variant is chosen for without ``--dtype``: the float16
#: converter holds the whole graph in memory and serialises it (protobuf's 2 GB limit), which would undo streamed
#: weights (`exporter_onnx.streaming`, from 1 GiB) and fail beyond 2 GB.
AUTO_FP16_MAX_BYTES = 1 << 30


def with_checkpoint_dtype(
    variant: VariantOptions, checkpoint_dtype: str | None, fp32_bytes: int = 0
) -> tuple[VariantOptions, str | None]:
    """The variant to export when the user chose no ``--dtype``: the checkpoint's dtype where onnxruntime's CPU can
    run it, else float32; with the reason to log (None when the checkpoint is float32 or the choice was the
    user's). A float16 checkpoint whose float32 weights (`fp32_bytes`) stay under `AUTO_FP16_MAX_BYTES` gives the
    fp16 variant (validated with its stated tolerance and task checks); a larger one, and a bfloat16 one, give
    float32, which holds every float16 and bfloat16 value exactly. With ``--quantize`` the weights are quantized
    from float32 whatever the checkpoint holds."""
    if variant.dtype is not None or variant.quantize or checkpoint_dtype in (None, "float32"):
        return variant, None
    if checkpoint_dtype == "float16" and fp32_bytes < AUTO_FP16_MAX_BYTES:
        return dataclasses.replace(variant, dtype="fp16"), (
            "the checkpoint stores float16 weights: exported as fp16 (inputs and outputs float32); pass "
            f"{option_hint('dtype', 'fp32')} for a float32 graph"
        )
    if checkpoint_dtype == "float16":
        return variant, (
            f"the checkpoint stores float16 weights: exported as fp32, which holds every float16 value exactly (the "
            f"fp16 conversion holds the whole {fp32_bytes / 2**30:.1f} GiB graph in memory); pass "
            f"{option_hint('dtype', 'fp16')} for half the size on a model under 2 GB"
        )
    if checkpoint_dtype == "bfloat16":
        return variant, (
            "the checkpoint stores bfloat16 weights: exported as fp32, which holds every bfloat16 value exactly "
            f"(onnxruntime {_ort_version()} cannot run bfloat16 on the CPU); pass {option_hint('dtype', 'fp16')} "
            "for half the size"
        )
    return variant, (
        f"the checkpoint stores {checkpoint_dtype} weights: exported as fp32 (they were rounded to float32 when "
        "loaded, and validation compares with that model)"
    )


def _ort_version() -> str:
    import onnxruntime as ort

    return str(ort.__version__)
