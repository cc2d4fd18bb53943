"""Which weights a backbone runs with: a published file (downloaded once, checked, cached), a local file, or random.

``--weights default`` (or a weight set's name, e.g. ``IMAGENET1K_V1``) takes torchvision's published file from
download.pytorch.org into the torch hub cache (``$TORCH_HOME/hub/checkpoints``, where torchvision keeps it too), and
checks that its sha256 starts with the digits in its name, cached or not. ``--weights FILE`` takes a local copy; a
file whose sha256 matches a published one gets that weight set's preprocessing, any other file the backbone's
default preprocessing. ``--weights random`` runs the randomly initialised network (seeded; for tests and timing,
never for results). The store records the file's full sha256.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from meid_bench.errors import MeidBenchError
from meid_bench.extract.catalog import BackboneInfo, Preprocessing, WeightSet, known_weight_file

RANDOM = "random"


@dataclass(frozen=True)
class ResolvedWeights:
    """The weights a run uses: ``label`` as recorded (a weight set name, ``file:NAME`` or ``random``)."""

    label: str
    path: Path | None
    sha256: str
    preprocessing: Preprocessing


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hub_checkpoint_path(weights: WeightSet) -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / weights.file_name


def _download(weights: WeightSet, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(weights.url, str(path), hash_prefix=weights.sha256_prefix, progress=True)
    except (OSError, RuntimeError, ValueError) as exc:  # URLError is an OSError; a hash mismatch a RuntimeError
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MeidBenchError(f"could not download {weights.url} ({message}); without internet, copy that file to "
                             f"{path} or pass --weights FILE") from None


def resolve_weights(info: BackboneInfo, choice: str) -> ResolvedWeights:
    """Resolve ``--weights`` (default, a weight set name, random, or a file) for a backbone; downloads if needed."""
    if choice == RANDOM:
        return ResolvedWeights(RANDOM, None, "", info.default_weights.preprocessing)
    published = info.weight_set(choice)
    if published is not None:
        path = hub_checkpoint_path(published)
        if not path.is_file():
            _download(published, path)
        sha = sha256_of(path)
        if not sha.startswith(published.sha256_prefix):
            raise MeidBenchError(f"{path}: sha256 {sha[:16]}... does not start with {published.sha256_prefix}, the "
                                 f"digits in its published name (a damaged download); delete it and run again")
        return ResolvedWeights(published.name, path, sha, published.preprocessing)
    path = Path(choice)
    if not path.is_file():
        names = ", ".join(["default", RANDOM] + [w.name for w in info.weights])
        raise MeidBenchError(f"--weights {choice}: no such file, and not a weight set of {info.name} ({names})")
    sha = sha256_of(path)
    known = known_weight_file(sha)
    if known is not None and known[0].name != info.name:
        raise MeidBenchError(f"{path}: these are the published {known[0].name} {known[1].name} weights, not "
                             f"{info.name} ones; pass --backbone {known[0].name}")
    if known is not None:
        return ResolvedWeights(known[1].name, path, sha, known[1].preprocessing)
    return ResolvedWeights(f"file:{path.name}", path, sha, info.default_weights.preprocessing)


def load_weights(model, weights: ResolvedWeights, backbone: str) -> None:
    """Load a resolved weight file into a backbone, strictly (every name and shape must match)."""
    import torch

    if weights.path is None:
        return
    try:
        state = torch.load(weights.path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        raise MeidBenchError(f"{weights.path}: not a readable torch weights file ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:160] if str(exc) else ''})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MeidBenchError(f"{weights.path}: not a state dict of tensors (a torchvision weights file is one)")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise MeidBenchError(f"{weights.path}: does not fit {backbone} ({detail})") from None

