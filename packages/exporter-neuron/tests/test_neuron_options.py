"""Our options mapped onto each SDK's arguments, and mistakes refused with the fix (no torch, no SDK needed)."""

from __future__ import annotations

import pytest

from exporter_core.errors import InvalidArgumentError
from exporter_neuron.backend import NeuronBackend
from exporter_neuron.options import compiler_arguments, parse_options, trace_arguments, trace_function


@pytest.mark.parametrize(
    ("auto_cast", "cast_type", "inf1", "inf2"),
    [
        (None, None, [], ["--target", "inf2"]),
        ("none", None, ["--fast-math", "none"], ["--target", "inf2", "--auto-cast", "none"]),
        (
            "matmul",
            None,
            ["--fast-math", "fp32-cast-matmult-bf16"],
            ["--target", "inf2", "--auto-cast", "matmult", "--auto-cast-type", "bf16"],
        ),
        (
            "matmul",
            "fp16",
            ["--fast-math", "fp32-cast-matmult-fp16"],
            ["--target", "inf2", "--auto-cast", "matmult", "--auto-cast-type", "fp16"],
        ),
        (
            "all",
            "bf16",
            ["--fast-math", "fp32-cast-all"],
            ["--target", "inf2", "--auto-cast", "all", "--auto-cast-type", "bf16"],
        ),
        (
            "all",
            "fp16",
            ["--fast-math", "fp32-cast-all-fp16"],
            ["--target", "inf2", "--auto-cast", "all", "--auto-cast-type", "fp16"],
        ),
    ],
)
def test_auto_cast_maps_to_fast_math_on_inf1_and_auto_cast_on_inf2(auto_cast, cast_type, inf1, inf2):
    common = {"auto_cast": auto_cast, "auto_cast_type": cast_type}
    assert compiler_arguments(parse_options({"target": "inf1", **common})) == inf1
    assert compiler_arguments(parse_options({"target": "inf2", **common})) == inf2


def test_trn1_gets_its_own_target_and_tf32():
    options = parse_options({"target": "trn1", "auto_cast": "all", "auto_cast_type": "tf32"})
    assert compiler_arguments(options) == ["--target", "trn1", "--auto-cast", "all", "--auto-cast-type", "tf32"]
    assert trace_function(options) == "torch_neuronx.trace"


def test_compiler_args_pass_through_after_ours_from_a_string_or_a_list():
    options = parse_options(
        {"target": "inf2", "auto_cast": "none", "compiler_args": "--optlevel 1 --model-type 'transformer'"}
    )
    assert compiler_arguments(options) == [
        "--target",
        "inf2",
        "--auto-cast",
        "none",
        "--optlevel",
        "1",
        "--model-type",
        "transformer",
    ]
    assert compiler_arguments(parse_options({"target": "inf1", "compiler_args": ["-O2"]})) == ["-O2"]


def test_dynamic_batch_is_a_trace_argument_on_inf1_only():
    inf1 = trace_arguments(parse_options({"target": "inf1", "dynamic_batch": True, "compiler_workdir": "/tmp/w"}))
    assert inf1 == {"compiler_args": [], "dynamic_batch_size": True, "compiler_workdir": "/tmp/w"}
    # torch-neuronx switches dynamic batching on after tracing (torch_neuronx.dynamic_batch), not through trace.
    assert trace_arguments(parse_options({"target": "inf2", "dynamic_batch": True})) == {
        "compiler_args": ["--target", "inf2"]
    }
    assert trace_function(parse_options({"target": "inf1"})) == "torch_neuron.trace"


def test_defaults_are_inf2_and_the_architectures_shape():
    options = parse_options({})
    assert (options.target, options.batch_size, options.sequence_length, options.dynamic_batch) == (
        "inf2",
        None,
        None,
        False,
    )


def test_the_backends_checked_options_read_back_to_the_same_options():
    given = {
        "target": "inf1",
        "batch_size": 4,
        "dynamic_batch": True,
        "auto_cast": "all",
        "compiler_args": "-O2 --x 'a b'",
    }
    parsed = parse_options(given)
    assert parse_options(parsed.to_dict()) == parsed
    assert parsed.to_dict()["compiler_args"] == ["-O2", "--x", "a b"]
    with pytest.raises(InvalidArgumentError, match="has no option 'opset'"):
        NeuronBackend.check_options({"opset": 14})  # refused before the SDK is looked up


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"target": "inf3"}, "choose one of inf1, inf2, trn1"),
        ({"batch_size": 0}, "batch_size=16"),  # from Python; the command line says --batch-size 16
        ({"sequence_length": 1}, "at least 2"),
        ({"auto_cast": "half"}, "auto_cast must be one of none, matmul, all"),
        ({"auto_cast_type": "fp16"}, "needs --auto-cast matmul or --auto-cast all"),
        ({"target": "inf1", "auto_cast": "all", "auto_cast_type": "tf32"}, "Inf1 (neuron-cc) cannot cast to tf32"),
        ({"auto_cast": "all", "compiler_args": "--auto-cast=none"}, "use one of them"),
        ({"target": "inf1", "auto_cast": "none", "compiler_args": ["--fast-math", "all"]}, "use one of them"),
        ({"compiler_args": "--target trn1"}, "not inside --compiler-args"),
        ({"compiler_args": 5}, "a string or a list of strings"),
        ({"opset": 14}, "has no option 'opset'"),
    ],
)
def test_mistakes_are_refused_with_the_fix(options, message):
    with pytest.raises(InvalidArgumentError) as caught:
        parse_options(options)
    assert message in str(caught.value)
