"""Which Neuron SDK a target needs, whether it is installed, and how to install it, read from package metadata.

Inf1 (NeuronCore-v1) compiles with torch-neuron (import package ``torch_neuron``, compiler neuron-cc); Inf2 and
Trn1 (NeuronCore-v2) with torch-neuronx (``torch_neuronx``, compiler neuronx-cc). Both come from AWS's package
index; the PyPI projects of those names are empty placeholders.

Detection never imports the SDK (importing it loads torch, XLA and the Neuron runtime). An SDK counts as installed
when the installed distribution metadata has a provider of its import package: AWS's own distribution, looked up
by name, or else any installed distribution whose files include that package (exporter-neuron's test stand-in is
one; the metadata of an artifact records which provider compiled it, and whether it was AWS's). The provider's
own requirements (torch version, compiler, runtime) must be satisfied too.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from exporter_core.errors import BackendUnavailableError, InvalidArgumentError

__all__ = [
    "AWS_INDEX",
    "DEFAULT_TARGET",
    "SDKS",
    "TARGETS",
    "InstalledSdk",
    "NeuronSdk",
    "find_sdk",
    "import_sdk",
    "install_command",
    "require_sdk",
    "sdk_for",
    "sdk_problem",
    "unavailable_reason",
]

#: AWS's package index, where the real SDK distributions live.
AWS_INDEX = "https://pip.repos.neuron.amazonaws.com"
#: Instance families the backend compiles for, in the order help texts list them.
TARGETS = ("inf1", "inf2", "trn1")
DEFAULT_TARGET = "inf2"


@dataclass(frozen=True)
class NeuronSdk:
    """One Neuron SDK for PyTorch: its AWS distribution, import package, compiler, and the targets it serves."""

    distribution: str
    module: str
    compiler_distribution: str
    targets: tuple[str, ...]


SDKS = (
    NeuronSdk("torch-neuron", "torch_neuron", "neuron-cc", ("inf1",)),
    NeuronSdk("torch-neuronx", "torch_neuronx", "neuronx-cc", ("inf2", "trn1")),
)


@dataclass(frozen=True)
class InstalledSdk:
    """An installed provider of an SDK's import package, as its metadata describes it."""

    sdk: NeuronSdk
    distribution: str
    version: str
    summary: str

    @property
    def is_aws(self) -> bool:
        """True when the provider is AWS's own distribution (not a stand-in or a fork)."""
        return _normalise(self.distribution) == _normalise(self.sdk.distribution)

    def describe(self) -> dict[str, Any]:
        """JSON-ready facts for artifact metadata: module, provider, versions, and the compiler's version."""
        return {
            "module": self.sdk.module,
            "distribution": self.distribution,
            "version": self.version,
            "aws_sdk": self.is_aws,
            "summary": self.summary,
            "compiler": self.sdk.compiler_distribution,
            "compiler_version": _version(self.sdk.compiler_distribution),
        }


def _normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def sdk_for(target: str) -> NeuronSdk:
    """The SDK that compiles for `target` (inf1, inf2, trn1)."""
    for sdk in SDKS:
        if target in sdk.targets:
            return sdk
    raise InvalidArgumentError(
        f"unknown Neuron target {target!r}; choose one of {', '.join(TARGETS)} (for example --target inf2)"
    )


def install_command(sdk: NeuronSdk) -> str:
    """The pip command that installs `sdk` from AWS's index."""
    return f"pip install {sdk.distribution} --extra-index-url {AWS_INDEX}"


def _providers(module: str) -> list[str]:
    """Installed distributions whose recorded files include the top-level package `module`.

    Only the distributions installed beside the package are read (a package's metadata lives in its own
    site directory), and their ``top_level.txt`` / ``RECORD`` are searched as text: parsing every file list of
    a large environment takes seconds.
    """
    spec = importlib.util.find_spec(module)
    if spec is None:
        return []
    locations = list(spec.submodule_search_locations or []) or ([spec.origin] if spec.origin else [])
    site_dirs = sorted({str(Path(location).parent) for location in locations})
    found = set()
    for dist in metadata.distributions(path=site_dirs):
        top_level = (dist.read_text("top_level.txt") or "").split()
        record = "\n" + (dist.read_text("RECORD") or "")
        if module in top_level or f"\n{module}/" in record or f"\n{module}.py," in record:
            found.add(str(dist.metadata["Name"]))
    return sorted(found)


def find_sdk(sdk: NeuronSdk) -> InstalledSdk | None:
    """The installed provider of `sdk`, found in package metadata without importing anything; None if absent."""
    try:
        dist = metadata.distribution(sdk.distribution)
    except metadata.PackageNotFoundError:
        dist = None
    if dist is None:
        # Not AWS's distribution: whichever installed distribution provides the import package (find_spec only
        # locates the package, it runs nothing).
        names = _providers(sdk.module)
        if not names:
            return None
        dist = metadata.distribution(names[0])
    return InstalledSdk(
        sdk=sdk,
        distribution=str(dist.metadata["Name"]),
        version=str(dist.version),
        summary=str(dist.metadata.json.get("summary") or ""),
    )


def _unmet_requirements(installed: InstalledSdk) -> list[str]:
    from exporter_core.plugins import missing_requirements

    return missing_requirements(installed.distribution)


def sdk_problem(target: str) -> str | None:
    """Why `target` cannot be compiled for here (its SDK missing or broken), or None when it can."""
    sdk = sdk_for(target)
    installed = find_sdk(sdk)
    if installed is None:
        families = "/".join(sdk.targets)
        return (
            f"the Neuron SDK for {families} ({sdk.distribution}, import package {sdk.module}) is not installed; "
            f"install it from AWS's index: {install_command(sdk)}"
        )
    unmet = _unmet_requirements(installed)
    if unmet:
        return (
            f"{installed.distribution} {installed.version} is installed but its requirements are not: "
            f"{', '.join(unmet)}; reinstall it with: {install_command(sdk)}"
        )
    return None


def unavailable_reason(target: str | None = None) -> str | None:
    """Why the backend cannot run for `target`; with no target, None as long as one SDK works, else both reasons."""
    if target is not None:
        return sdk_problem(target)
    problems = [sdk_problem(sdk.targets[0]) for sdk in SDKS]
    if all(problems):
        return "no Neuron SDK is installed: " + "; and ".join(str(p) for p in problems)
    return None


def require_sdk(target: str) -> InstalledSdk:
    """The working SDK for `target`, or `BackendUnavailableError` naming the package and the pip command."""
    problem = sdk_problem(target)
    if problem:
        raise BackendUnavailableError(f"cannot compile for {target}: {problem}")
    installed = find_sdk(sdk_for(target))
    assert installed is not None  # sdk_problem just found it
    return installed


def import_sdk(installed: InstalledSdk) -> Any:
    """Import the SDK's package (``torch_neuron`` / ``torch_neuronx``); this loads torch and the Neuron runtime."""
    try:
        return importlib.import_module(installed.sdk.module)
    except ImportError as exc:
        raise BackendUnavailableError(
            f"{installed.distribution} {installed.version} is installed but `import {installed.sdk.module}` fails "
            f"({exc}); reinstall it with: {install_command(installed.sdk)}"
        ) from exc
