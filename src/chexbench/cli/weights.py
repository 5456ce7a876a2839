"""``chexbench weights fetch|list``: ImageNet weights on request, and what is on this machine.

``fetch`` is the only command that downloads anything; a grid run never does.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from chexbench.cli.app import app, console
from chexbench.core.errors import ConfigError
from chexbench.spec.registry import BACKBONES

weights_app = typer.Typer(
    help="ImageNet weights and hf-hub: checkpoints: fetch them on request, list what is here.",
    no_args_is_help=True,
)
app.add_typer(weights_app, name="weights")


def _backbones_with_weights() -> list[str]:
    return [n for n in BACKBONES.names() if BACKBONES.get(n).has_imagenet_weights]


@weights_app.command("fetch")
def fetch_cmd(
    backbones: Annotated[
        list[str] | None,
        typer.Argument(
            help=(
                "backbones whose ImageNet weights to download, or hub checkpoints"
                " hf-hub:ORG/NAME[@REVISION][:FILE]"
            )
        ),
    ] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="every backbone that declares ImageNet weights")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="download again even if the weights are already stored")
    ] = False,
) -> None:
    """Download the ImageNet weights each backbone declares (timm / Hugging Face hub), verify
    them against our one-channel model, store them where the imagenet strategy finds them.
    An hf-hub: reference downloads that checkpoint (and its configuration files) into the local
    Hugging Face cache, where a checkpoint cell with that path finds it."""
    # lazy: keeps chexbench --help fast
    from chexbench.backbones import hub
    from chexbench.backbones.imagenet_weights import fetch, fetched

    refs = [
        hub.parse(n) for n in backbones or [] if hub.is_hub_ref(n)
    ]  # every reference checked before any download
    names = [n for n in backbones or [] if not hub.is_hub_ref(n)]
    if refs and not names and not all_:
        for ref in refs:
            _fetch_hub(ref, force)
        return
    if all_:
        names += [n for n in _backbones_with_weights() if n not in names]
    if not names:
        raise ConfigError(
            "name one or more backbones, or --all (with weights: "
            + ", ".join(_backbones_with_weights())
            + ")"
        )
    for n in names:  # every name checked before anything is downloaded
        if n not in BACKBONES:
            raise ConfigError(BACKBONES.unknown_message(n))
        if not BACKBONES.get(n).has_imagenet_weights:
            raise ConfigError(
                f"{n} has no ImageNet weights to fetch (backbones with weights:"
                f" {', '.join(_backbones_with_weights())})"
            )
    for n in names:
        stored = None if force else fetched(n)
        if stored is not None:
            console.print(
                f"already stored {escape(stored.timm_name)} for {n}: {escape(str(stored.path))}  sha256"
                f" {stored.sha256}  (--force downloads it again)",
                highlight=False,
                soft_wrap=True,
            )
            continue
        stored = fetch(n)
        console.print(
            f"stored {escape(stored.timm_name)} for {n}: {escape(str(stored.path))}  sha256 {stored.sha256}  "
            f"(from {escape(stored.source)})",
            highlight=False,
            soft_wrap=True,
        )
    for ref in refs:
        _fetch_hub(ref, force)


def _fetch_hub(ref, force: bool) -> None:
    from chexbench.backbones import hub
    from chexbench.backbones.foreign import file_sha256
    from chexbench.core.errors import WeightsError

    if not force:
        try:
            have = hub.resolve_cached(ref)
        except WeightsError:
            have = None
        if have is not None:
            console.print(
                f"already cached {escape(str(ref))}: commit {have.commit} {escape(have.filename)} at "
                f"{escape(str(have.path))}  sha256 {file_sha256(have.path)}  (--force downloads it again)",
                highlight=False,
                soft_wrap=True,
            )
            return
    got = hub.fetch(ref)
    console.print(
        f"stored {escape(str(ref))}: commit {got.commit} {escape(got.filename)} at {escape(str(got.path))}  "
        f"sha256 {file_sha256(got.path)}",
        highlight=False,
        soft_wrap=True,
    )


@weights_app.command("list")
def list_cmd() -> None:
    """Per backbone: its declared ImageNet weights, whether a file is here, its source and sha256."""
    # lazy: keeps chexbench --help fast
    from chexbench.backbones.imagenet_weights import present

    for name in BACKBONES.names():  # one line per file: greppable, never wrapped
        spec = BACKBONES.get(name)
        if not spec.has_imagenet_weights:
            line = f"{name}: not applicable (no ImageNet-pretrained weights)"
        else:
            files = present(name)
            line = (
                "\n".join(
                    f"{name}: {f.timm_name} present at {escape(str(f.path))}  source {escape(f.source)} "
                    f" sha256 {f.sha256}"
                    for f in files
                )
                or f"{name}: {spec.imagenet_weights} [yellow]missing[/]: chexbench weights fetch {name}"
            )
        console.print(line, highlight=False, soft_wrap=True)
