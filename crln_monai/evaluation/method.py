"""The name of the method a run trains, from the bundle's switches (report titles, model cards)."""

from __future__ import annotations

__all__ = ["method_name"]


def method_name(
    use_unlabelled: bool = True, use_dim: bool = True, use_cps: bool = True, cutmix: bool = True, noise: bool = True
) -> str:
    """Name the method that the switches train, in the words of the paper's ablation
    (Table 5, docs/method.md#paper-results).

    ============================  ==========================================================
    switches                      name
    ============================  ==========================================================
    ``use_unlabelled=False``      ``"supervised only"`` (``"supervised only + DIM"`` with the DIM)
    no DIM, no CPS                ``"mean teacher"``, ``"mean teacher + CutMix + noise"``, ...
    DIM, no CPS                   ``"CRLN (DIM)"``
    DIM and CPS                   ``"CRLN (full)"``
    CPS without DIM               ``"mean teacher + CutMix + noise + CPS"``
    ============================  ==========================================================

    The paper's CRLN rows include CutMix and noise; a CRLN run without them says so (``"CRLN (full) without
    CutMix"``). Without unlabelled volumes CPS and the strong augmentation never run, so they are not named.

    Args:
        use_unlabelled: train on the unlabelled volumes (mean teacher).
        use_dim: the DIM's relation map and the rectification of pseudo-labels.
        use_cps: Collaborative Positive Supervision.
        cutmix: CutMix in the strong augmentation.
        noise: random noise in the strong augmentation.

    Returns:
        the method's name.

    Raises:
        TypeError: a switch is not a bool (``'false'`` from a command line is a truthy string).
    """
    switches = {"use_unlabelled": use_unlabelled, "use_dim": use_dim, "use_cps": use_cps, "cutmix": cutmix, "noise": noise}
    bad = {k: v for k, v in switches.items() if not isinstance(v, bool)}
    if bad:
        raise TypeError(f"method_name: switches must be booleans, got {', '.join(f'{k}={v!r}' for k, v in bad.items())}")
    if not use_unlabelled:
        return "supervised only + DIM" if use_dim else "supervised only"
    augment = [part for part, on in (("CutMix", cutmix), ("noise", noise)) if on]
    if not use_dim:
        return " + ".join(["mean teacher", *augment, *(["CPS"] if use_cps else [])])
    name = "CRLN (full)" if use_cps else "CRLN (DIM)"
    missing = [part for part, on in (("CutMix", cutmix), ("noise", noise)) if not on]
    return f"{name} without {' and '.join(missing)}" if missing else name
