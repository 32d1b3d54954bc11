"""The feature read from the checkpoint, Optimum task names as aliases, and an output folder that describes itself."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from conftest import run_module

from exporter_core.errors import UnsupportedFeatureError
from exporter_core.features import supported_features
from exporter_core.task_detection import choose_feature, detect_feature
from exporter_core.tasks import AVAILABLE_FEATURES, FEATURE_ALIASES, resolve_feature


def _report_file(out: Path) -> Path:
    """The one validation report an export wrote into `out`."""
    (path,) = out.glob("*.validation.json")
    return path


def _config_only(tmp_path: Path, model_type: str, architectures: list[str] | None) -> Path:
    """A folder with only config.json: detection reads nothing else."""
    data: dict = {"model_type": model_type}
    if architectures is not None:
        data["architectures"] = architectures
    (tmp_path / "config.json").write_text(json.dumps(data))
    return tmp_path


@pytest.mark.parametrize(
    ("model_type", "architectures", "feature"),
    [
        ("llama", ["LlamaForCausalLM"], "causal-lm-with-past"),
        ("bert", ["BertForSequenceClassification"], "sequence-classification"),
        ("bert", ["BertForMaskedLM"], "masked-lm"),
        ("roberta", ["RobertaForQuestionAnswering"], "question-answering"),
        ("whisper", ["WhisperForConditionalGeneration"], "speech2seq-lm-with-past"),
        ("t5", ["T5ForConditionalGeneration"], "seq2seq-lm-with-past"),
        ("bart", ["BartForConditionalGeneration"], "seq2seq-lm-with-past"),  # also in the masked-LM mapping
        ("wav2vec2", ["Wav2Vec2ForCTC"], "ctc"),
        ("vit", ["ViTForImageClassification"], "image-classification"),
        ("bert", ["BertModel"], "default"),
        ("bert", None, "default"),
    ],
)
def test_the_feature_comes_from_the_architectures_through_the_auto_mappings(
    tmp_path, model_type, architectures, feature
):
    folder = _config_only(tmp_path, model_type, architectures)
    choice = detect_feature(folder, model_type, supported_features(model_type))
    assert choice.feature == feature
    assert choice.reason and (architectures is None or architectures[0] in choice.reason)


def test_a_head_the_installed_config_lacks_falls_back_to_default_with_the_reason(tmp_path):
    folder = _config_only(tmp_path, "t5", ["T5ForQuestionAnswering"])
    choice = detect_feature(folder, "t5", supported_features("t5"))
    assert choice.feature == "default"
    assert "question-answering" in choice.reason and "does not support" in choice.reason and "default" in choice.reason


def test_a_class_in_no_mapping_falls_back_to_default_with_the_reason(tmp_path):
    folder = _config_only(tmp_path, "bert", ["BertForPreTraining"])
    choice = detect_feature(folder, "bert", supported_features("bert"))
    assert choice.feature == "default" and "BertForPreTraining is in no Auto mapping" in choice.reason


def test_a_sentence_transformers_folder_is_a_sentence_embedding(tmp_path):
    folder = _config_only(tmp_path, "bert", ["BertModel"])
    (folder / "modules.json").write_text("[]")
    assert detect_feature(folder, "bert", supported_features("bert")).feature == "sentence-embedding"
    # A config that does not offer the feature falls back, saying why.
    fallback = detect_feature(folder, "layoutlm", supported_features("layoutlm"))
    assert fallback.feature == "default" and "sentence-embedding" in fallback.reason


@pytest.mark.parametrize(
    ("alias", "model_type", "feature"),
    [
        ("text-generation", "llama", "causal-lm"),
        ("text-generation-with-past", "llama", "causal-lm-with-past"),
        ("feature-extraction", "bert", "default"),
        ("fill-mask", "bert", "masked-lm"),
        ("text-classification", "bert", "sequence-classification"),
        ("text2text-generation-with-past", "t5", "seq2seq-lm-with-past"),
        ("automatic-speech-recognition", "whisper", "speech2seq-lm"),
        ("automatic-speech-recognition", "wav2vec2", "ctc"),  # a CTC head
        ("sentence-similarity", "bert", "sentence-embedding"),
        ("token-classification", "bert", "token-classification"),  # already our name
    ],
)
def test_optimum_task_names_resolve_to_our_features(alias, model_type, feature):
    assert resolve_feature(alias, supported_features(model_type)) == feature


def test_every_alias_names_known_features_and_none_shadows_a_feature():
    assert not set(FEATURE_ALIASES) & set(AVAILABLE_FEATURES)
    assert {f for features in FEATURE_ALIASES.values() for f in features} <= set(AVAILABLE_FEATURES)


def test_an_alias_the_model_type_cannot_serve_is_refused_with_the_list(tmp_path):
    with pytest.raises(UnsupportedFeatureError, match=r"speech2seq-lm.*ctc.*supported features: default"):
        resolve_feature("automatic-speech-recognition", supported_features("bert"))
    choice = choose_feature("fill-mask", tmp_path, "bert", supported_features("bert"))
    assert choice.feature == "masked-lm" and "'fill-mask' is the task name" in choice.reason
    assert choose_feature("masked-lm", tmp_path, "bert", supported_features("bert")).reason is None


def test_features_command_lists_the_aliases(cli):
    result = cli("features", "llama")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == list(supported_features("llama"))
    assert any(line.startswith("causal-lm-with-past") and "text-generation-with-past" in line for line in lines)
    assert any(line.startswith("sequence-classification") and "text-classification" in line for line in lines)


def test_cli_without_feature_exports_the_checkpoints_own_and_the_folder_describes_itself(cli, checkpoint, tmp_path):
    out = tmp_path / "gpt2"
    result = cli("onnx", "--model", str(checkpoint("gpt2", "causal-lm")), str(out))
    assert result.returncode == 0, result.stderr
    chosen = [line for line in result.stderr.splitlines() if line.startswith("feature: ")]
    assert chosen == [
        "feature: causal-lm-with-past (config.json names GPT2LMHeadModel (causal-lm, generating with past key values))"
    ]
    report = json.loads(_report_file(out).read_text())
    assert report["passed"] and report["feature"] == "causal-lm-with-past"
    assert {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in out.iterdir()
    }
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    assert AutoConfig.from_pretrained(str(out)).model_type == "gpt2"
    assert AutoTokenizer.from_pretrained(str(out))("hello world")["input_ids"]
    assert GenerationConfig.from_pretrained(str(out)).eos_token_id is not None
    assert not [p for p in out.iterdir() if p.name.startswith(".exporter-")]  # nothing half-written left


def test_cli_translates_an_optimum_task_name_and_torchscript_folders_describe_themselves(cli, checkpoint, tmp_path):
    out = tmp_path / "ts"
    folder = checkpoint("bert", "sequence-classification")
    result = cli("torchscript", "--model", str(folder), "--feature", "text-classification", str(out))
    assert result.returncode == 0, result.stderr
    assert "feature: sequence-classification ('text-classification' is the task name of our feature " in result.stderr
    assert json.loads(_report_file(out).read_text())["feature"] == "sequence-classification"
    assert (out / "config.json").read_bytes() == (folder / "config.json").read_bytes()
    assert (out / "tokenizer.json").read_bytes() == (folder / "tokenizer.json").read_bytes()


def test_the_old_tool_keeps_default_without_feature(checkpoint, tmp_path):
    out = tmp_path / "old"
    result = run_module("exporter.onnx", "--model", str(checkpoint("bert", "sequence-classification")), str(out))
    assert result.returncode == 0, result.stderr
    assert "feature: " not in result.stderr
    assert [o.name for o in onnx.load(str(out / "model.onnx")).graph.output] == ["last_hidden_state"]


def test_the_python_api_keeps_default(checkpoint, tmp_path):
    import exporter

    report = exporter.export(checkpoint("bert", "sequence-classification"), tmp_path / "api", format="onnx")
    assert report.passed and report.feature == "default"
