"""The public test kit: tiny sizes declared by each config, tiny tokenizer and checkpoints, generated export cases,
the cache shared by a test run, and the pytest plugin (tiers, recording)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from exporter_core import export_cases, loading, plugins
from exporter_core.architectures.encoders import BertOnnxConfig
from exporter_core.config import TextEncoderOnnxConfig
from exporter_core.export_cases import (
    ArtifactCache,
    CaseOutcome,
    ExportCase,
    coverage_problems,
    family_of,
    generate_cases,
    read_records,
    representative_features,
    representatives,
)
from exporter_core.testing import (
    INIT_STD,
    SPECIAL_TOKENS,
    build_tiny_checkpoint,
    build_tiny_tokenizer,
    init_std_overrides,
    preprocessor_kind,
    tiny_config_for,
    tiny_model_config,
)

# -- tiny sizes: declared by each architecture config ---------------------------------------------------------------


def test_every_installed_architecture_declares_tiny_sizes_that_make_a_config() -> None:
    from transformers import AutoConfig

    def holds(config: object, key: str, value: object) -> bool:
        if not hasattr(config, key):  # an __init__-only keyword (DETR's use_timm_backbone picks the backbone)
            return True
        got = getattr(config, key)
        if isinstance(got, (tuple, list)) and isinstance(value, int):  # image_size 64 -> (64, 64)
            return all(item == value for item in got)
        if isinstance(value, dict) and hasattr(got, "to_dict"):  # a sub-config (CLIP's text_config, ...)
            return all(holds(got, k, v) for k, v in value.items())
        return bool(got == value)

    assert coverage_problems([], backends=[]) == []
    for info in plugins.list_architectures():
        sizes = tiny_config_for(info.name)
        config = AutoConfig.for_model(info.name, **sizes)
        assert all(holds(config, key, value) for key, value in sizes.items()), info.name


def test_the_guard_names_an_architecture_without_tiny_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoSizesOnnxConfig(TextEncoderOnnxConfig):
        """An architecture that forgot its tiny sizes."""

        features = ("default",)

    fake = plugins.PluginInfo("nosizes", "somewhere:NoSizesOnnxConfig", "somewhere-dist", "1.0")
    listed = plugins.list_architectures()
    monkeypatch.setattr(plugins, "list_architectures", lambda: [*listed, fake])
    real = plugins.load_architecture
    monkeypatch.setattr(
        plugins, "load_architecture", lambda name: NoSizesOnnxConfig if name == "nosizes" else real(name)
    )
    problems = coverage_problems(generate_cases(["b"]), ["b"])
    assert len(problems) == 1 and "nosizes" in problems[0] and "tiny_config" in problems[0]
    with pytest.raises(LookupError, match="tiny_config"):
        tiny_config_for("nosizes")
    # A case missing for a declared feature is named too.
    cases = [c for c in generate_cases(["b"]) if (c.model_type, c.feature) != ("bert", "masked-lm")]
    assert any("bert" in p and "'masked-lm' has no case for b" in p for p in coverage_problems(cases, ["b"]))


def test_tiny_model_config_applies_overrides_without_touching_the_class() -> None:
    config = tiny_model_config("bert", num_hidden_layers=3)
    assert config.model_type == "bert"
    assert config.num_hidden_layers == 3 and config.hidden_size == 32
    assert BertOnnxConfig.tiny_config["num_hidden_layers"] == 2


def test_a_model_type_without_an_installed_architecture_is_named() -> None:
    with pytest.raises(LookupError, match="no installed architecture declares model type 'nonesuch'"):
        tiny_model_config("nonesuch")


def test_init_std_overrides_use_the_names_each_config_has() -> None:
    assert init_std_overrides("bert") == {"initializer_range": INIT_STD}
    assert init_std_overrides("xlm") == {"init_std": INIT_STD, "embed_init_std": INIT_STD}
    assert init_std_overrides("bart", 0.5) == {"init_std": 0.5}
    assert init_std_overrides("t5") == {}  # T5 scales its own initialisation


def test_preprocessor_kind_follows_the_inputs() -> None:
    assert preprocessor_kind("bert", "sequence-classification") == "tokenizer"
    assert preprocessor_kind("t5", "seq2seq-lm-with-past") == "tokenizer"
    assert preprocessor_kind("perceiver", "masked-lm") == "tokenizer"
    # BART's eos (2) is the tokenizer's [CLS]: generation would stop at once.
    assert preprocessor_kind("bart", "seq2seq-lm") is None
    import importlib.util

    expected = "image_processor" if importlib.util.find_spec("PIL") is not None else None
    assert preprocessor_kind("vit", "image-classification") == expected


def test_tiny_tokenizer_ids_fit_the_vocabulary() -> None:
    tokenizer = build_tiny_tokenizer(vocab_size=20)
    vocab = tokenizer.get_vocab()
    assert max(vocab.values()) < 20
    assert {token: vocab[token] for token in SPECIAL_TOKENS} == SPECIAL_TOKENS
    assert tokenizer.pad_token_id == SPECIAL_TOKENS["[PAD]"]
    ids = tokenizer("the model", "reads a")["input_ids"]
    assert ids[0] == SPECIAL_TOKENS["[CLS]"] and ids.count(SPECIAL_TOKENS["[SEP]"]) == 2


@pytest.mark.parametrize(
    ("model_type", "feature", "class_name"),
    [
        ("bert", "masked-lm", "BertForMaskedLM"),
        ("distilbert", "sequence-classification", "DistilBertForSequenceClassification"),
        ("flaubert", "causal-lm", "FlaubertWithLMHeadModel"),
        ("layoutlm", "token-classification", "LayoutLMForTokenClassification"),
        ("gpt2", "causal-lm-with-past", "GPT2LMHeadModel"),
    ],
)
def test_build_tiny_checkpoint(tmp_path: Path, model_type: str, feature: str, class_name: str) -> None:
    folder = build_tiny_checkpoint(model_type, feature, tmp_path / model_type, with_tokenizer=True)
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert loading.resolve_checkpoint(folder) == folder
    assert loading.read_model_type(folder) == json.loads((folder / "config.json").read_text())["model_type"]
    model = loading.load_model(folder, feature, plugins.load_architecture(model_type))
    assert type(model).__name__ == class_name
    assert model.config.hidden_size == 32
    assert loading.load_preprocessor(folder) is not None


def test_build_tiny_checkpoint_is_seeded(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    first = load_file(build_tiny_checkpoint("distilbert", "default", tmp_path / "a", seed=3) / "model.safetensors")
    second = load_file(build_tiny_checkpoint("distilbert", "default", tmp_path / "b", seed=3) / "model.safetensors")
    third = load_file(build_tiny_checkpoint("distilbert", "default", tmp_path / "c", seed=4) / "model.safetensors")
    assert first.keys() == second.keys()
    name = next(k for k in first if k.endswith("q_lin.weight"))
    assert (first[name] == second[name]).all()
    assert not (first[name] == third[name]).all()
    assert not (tmp_path / "a" / "tokenizer.json").exists()


def test_build_tiny_checkpoint_config_overrides_and_init_std(tmp_path: Path) -> None:
    folder = build_tiny_checkpoint(
        "bert", "default", tmp_path, config_overrides={"num_hidden_layers": 1}, init_std=INIT_STD
    )
    config: dict[str, Any] = json.loads((folder / "config.json").read_text())
    assert config["num_hidden_layers"] == 1 and config["initializer_range"] == INIT_STD


# -- generated cases and tiers ------------------------------------------------------------------------------------------


def test_cases_cover_every_feature_of_every_architecture_for_each_backend() -> None:
    cases = generate_cases(["b1", "b2"])
    pairs = {
        (info.name, f)
        for info in plugins.list_architectures()
        for f in plugins.load_architecture(info.name).supported_features(info.name)
    }
    assert {(c.model_type, c.feature) for c in cases if c.backend == "b1"} == pairs
    assert len(cases) == 2 * len(pairs) == len(set(cases))
    assert {c.family for c in cases} >= {"encoders", "decoders", "seq2seq", "vision"}


def test_a_family_is_the_config_module() -> None:
    assert family_of(BertOnnxConfig) == "encoders"

    class ThirdParty:
        """A config class from another package."""

    ThirdParty.__module__ = "acme_exporter_arch.configs"
    assert family_of(ThirdParty) == "acme_exporter_arch.configs"


def test_representative_features_put_what_exercises_most_first() -> None:
    assert representative_features(("default", "default-with-past", "causal-lm", "causal-lm-with-past")) == [
        "causal-lm-with-past",
        "default-with-past",
        "causal-lm",
        "default",
    ]
    assert representative_features(("default", "masked-lm", "sequence-classification"))[:2] == [
        "sequence-classification",
        "masked-lm",
    ]
    assert representative_features(("default",)) == ["default"]


def test_the_default_tier_takes_one_typical_pair_per_family_and_backend() -> None:
    chosen = representatives(generate_cases(["b"]))
    firsts = {family: candidates[0] for (_, family), candidates in chosen.items()}
    assert (firsts["encoders"].model_type, firsts["encoders"].feature) == ("bert", "sequence-classification")
    assert (firsts["decoders"].model_type, firsts["decoders"].feature) == ("gpt2", "causal-lm-with-past")
    # The encoder-decoder feature set most model types share is now that of the generic family's members (FSMT's).
    assert (firsts["seq2seq"].model_type, firsts["seq2seq"].feature) == ("fsmt", "seq2seq-lm-with-past")
    assert firsts["vision"].feature == "image-classification"
    # A backend that refuses caches gets the same architecture without them next.
    assert [c.feature for c in chosen[("b", "decoders")]][:3] == [
        "causal-lm-with-past",
        "default-with-past",
        "causal-lm",
    ]


# -- the cache shared by a run ---------------------------------------------------------------------------------------


def _fake_run(calls: list[ExportCase], refuse: tuple[str, ...] = ()) -> Any:
    def run(case: ExportCase, checkpoint: Path, output: Path) -> CaseOutcome:
        calls.append(case)
        if case.feature in refuse:
            return CaseOutcome(case, "refused", reason="UnsupportedFeatureError: no", checkpoint=checkpoint)
        output.mkdir(parents=True)
        (output / "model.bin").write_bytes(b"x")
        return CaseOutcome(case, "validated", worst_difference=1e-7, output=output, checkpoint=checkpoint)

    return run


def test_the_cache_exports_a_case_once_and_rebuilds_its_outcome(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[ExportCase] = []
    monkeypatch.setattr(export_cases, "run_case", _fake_run(calls))
    case = ExportCase("distilbert", "default", "b", "encoders")
    first = ArtifactCache(tmp_path).outcome(case)
    again = ArtifactCache(tmp_path).outcome(case)  # another process would see the same files
    assert calls == [case]
    assert again.validated and again.worst_difference == 1e-7 and again.case == case
    assert again.artifacts() == first.artifacts() == [first.output / "model.bin"]
    assert (again.checkpoint / "config.json").is_file()
    other = ArtifactCache(tmp_path).outcome(case.but(options={"opset": 17}, sizes={"dim": 48}))
    assert len(calls) == 2 and other.case.id == "b:distilbert:default[opset=17,dim=48]"


def test_the_first_candidate_not_refused_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[ExportCase] = []
    monkeypatch.setattr(export_cases, "run_case", _fake_run(calls, refuse=("causal-lm-with-past", "default-with-past")))
    candidates = representatives(generate_cases(["b"]))[("b", "decoders")]
    outcome = ArtifactCache(tmp_path).first_accepted(candidates)
    assert outcome.validated and outcome.case.feature == "causal-lm"
    assert [o.case.feature for o in outcome.refused_before] == ["causal-lm-with-past", "default-with-past"]


def test_records_keep_the_last_outcome_of_each_case(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    case = ExportCase("bert", "default", "b", "encoders")
    export_cases.append_record(path, CaseOutcome(case, "failed", reason="boom"))
    export_cases.append_record(path, CaseOutcome(case, "validated", worst_difference=2e-6))
    export_cases.append_record(path, CaseOutcome(case.but(options={"opset": 17}), "refused", reason="no"))
    records = read_records(path)
    assert [(r["status"], r["options"]) for r in records] == [("validated", {}), ("refused", {"opset": 17})]
    assert set(records[0]["versions"]) == {"torch", "transformers", "onnx", "onnxruntime"} and records[0]["date"]


# -- the pytest plugin ----------------------------------------------------------------------------------------------

_PLUGIN_CONFTEST = """
import pytest
from exporter_core.export_cases import CaseOutcome


class FakeCache:
    def first_accepted(self, candidates):
        for case in candidates:
            if not case.feature.endswith("-with-past"):
                return CaseOutcome(case, "validated", worst_difference=1e-6)
        return CaseOutcome(candidates[-1], "refused", reason="UnsupportedFeatureError: no cache")


@pytest.fixture(scope="session")
def exporter_cache():
    return FakeCache()
"""

_PLUGIN_TESTS = """
import pytest
from exporter_core.pytest_plugin import assert_case

pytestmark = pytest.mark.exporter_backend("fake")


def test_case(export_case):
    assert_case(export_case)


@pytest.mark.exporter_matrix
def test_costly():
    pass
"""


def test_the_plugin_runs_representatives_by_default_and_every_case_in_the_matrix(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The inner run (same process) sees one installed backend, "fake", whose exports the fake cache answers.
    monkeypatch.setattr(plugins, "list_backends", lambda: [plugins.PluginInfo("fake", "fake:Backend", "fake", "1")])
    pytester.makeconftest(_PLUGIN_CONFTEST)
    pytester.makepyfile(test_generated=_PLUGIN_TESTS)
    families = {c.family for c in generate_cases(["fake"])}
    cases = generate_cases(["fake"])

    default = pytester.runpytest("-p", "no:cacheprovider", "-q")
    default.assert_outcomes(passed=len(families), deselected=1)

    record = pytester.path / "out" / "records.jsonl"
    matrix = pytester.runpytest("-p", "no:cacheprovider", "-q", "--exporter-matrix", f"--exporter-record={record}")
    refused = sum(1 for c in cases if c.feature.endswith("-with-past"))
    matrix.assert_outcomes(passed=len(cases) - refused + 1, skipped=refused)
    assert len(read_records(record)) == len(cases)
    matrix.stdout.fnmatch_lines([f"{refused} refused, {len(cases) - refused} validated; worst validated difference*"])


def test_a_tiny_model_that_cannot_serve_the_feature_is_a_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[ExportCase] = []
    monkeypatch.setattr(export_cases, "run_case", _fake_run(calls))
    # Without a pad_token_id GPT-Neo cannot serve sequence-classification: refused before any export.
    case = ExportCase("gpt_neo", "sequence-classification", "b", "decoders").but(sizes={"pad_token_id": None})
    outcome = ArtifactCache(tmp_path).outcome(case)
    assert outcome.refused and "pad_token_id" in (outcome.reason or "") and calls == []


def test_a_module_marked_for_a_backend_that_is_not_installed_skips_its_cases(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_generated=_PLUGIN_TESTS.replace('"fake"', '"not-installed"'))
    result = pytester.runpytest("-p", "no:cacheprovider", "-q", "-rs")
    result.assert_outcomes(skipped=1, deselected=1)
    result.stdout.fnmatch_lines(["*no export case: backend not-installed is not installed*"])
