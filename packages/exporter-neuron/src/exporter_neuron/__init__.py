"""exporter-neuron: the AWS Neuron backend (Inf1 through torch-neuron, Inf2/Trn1 through torch-neuronx).

Cheap to import: torch and the Neuron SDK load inside the functions that need them.
"""

from __future__ import annotations

from exporter_neuron.backend import NeuronBackend
from exporter_neuron.metadata import NeuronMetadata, read_metadata
from exporter_neuron.runtime import CompiledModuleRunner, load
from exporter_neuron.sdk import TARGETS, find_sdk, unavailable_reason

__all__ = [
    "TARGETS",
    "CompiledModuleRunner",
    "NeuronBackend",
    "NeuronMetadata",
    "find_sdk",
    "load",
    "read_metadata",
    "unavailable_reason",
]

__version__ = "0.1.0"
