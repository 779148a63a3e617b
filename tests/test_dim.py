"""Tests of the Dynamic Interaction Module (docs/method.md#dynamic-interaction-module, Table 6, A4–A6, A12, A16)."""

from __future__ import annotations

import math

import pytest
import torch

from crln_monai.networks.dim import (
    AGGREGATIONS,
    ClassCueAggregation,
    DynamicInteractionModule,
    PrototypeCrossAttention,
    SpatialProximity,
)

PATCH = (32, 32, 16)
BATCH = 2


def make_features(batch: int = BATCH, patch=PATCH, channels=(64, 32), seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    quarter = tuple(p // 4 for p in patch)
    half = tuple(p // 2 for p in patch)
    return [
        torch.randn(batch, channels[0], *quarter, generator=generator),
        torch.randn(batch, channels[1], *half, generator=generator),
    ]


def make_dim(**kwargs) -> DynamicInteractionModule:
    torch.manual_seed(kwargs.pop("seed", 0))
    kwargs.setdefault("patch_size", PATCH)
    kwargs.setdefault("num_prototypes", 4)
    return DynamicInteractionModule(**kwargs)


def count(module: torch.nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("levels", ["last", "all"])
@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_relation_map_shape_and_non_negative(aggregation, levels):
    dim = make_dim(aggregation=aggregation, levels=levels)
    relation_map = dim(make_features())
    assert relation_map.shape == (BATCH, 2, *PATCH)
    assert (relation_map >= 0).all()
    assert (relation_map > 0).any()  # the final ReLU does not kill everything


@pytest.mark.parametrize("num_classes, num_prototypes", [(3, 2), (2, 1), (4, 3)])
def test_any_class_and_prototype_count(num_classes, num_prototypes):
    dim = make_dim(num_classes=num_classes, num_prototypes=num_prototypes)
    assert isinstance(dim.prototypes, torch.nn.Parameter)
    assert dim.prototypes.shape == (num_classes, num_prototypes, 64)
    assert torch.count_nonzero(dim.prototypes) == 0  # zeros init (A12)
    relation_map = dim(make_features())
    assert relation_map.shape == (BATCH, num_classes, *PATCH)


def test_normal_prototype_init_is_small_random():
    prototypes = make_dim(num_prototypes=16, prototype_init="normal").prototypes
    assert 0.01 < prototypes.std().item() < 0.03
    assert abs(prototypes.mean().item()) < 0.01


def _backward_random_loss(dim: DynamicInteractionModule) -> None:
    relation_map = dim(make_features())
    weights = torch.randn(relation_map.shape, generator=torch.Generator().manual_seed(1))
    (relation_map * weights).sum().backward()


@pytest.mark.parametrize("levels", ["last", "all"])
@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_gradient_reaches_every_parameter(aggregation, levels):
    # seed 1: the final ReLU lets part of the map through at PyTorch's default init of the transposed conv
    # (with seed 0 it zeroes the whole cross_class map, and so every gradient above it)
    dim = make_dim(aggregation=aggregation, levels=levels, drop_path=0.0, prototype_init="normal", seed=1)
    _backward_random_loss(dim)
    for name, parameter in dim.named_parameters():
        assert parameter.grad is not None, f"{name} got no gradient"
        assert torch.count_nonzero(parameter.grad) > 0, f"{name} got an all-zero gradient"


@pytest.mark.parametrize("levels", ["last", "all"])
def test_zero_prototypes_get_gradient(levels):
    dim = make_dim(levels=levels, drop_path=0.0)
    assert torch.count_nonzero(dim.prototypes) == 0
    _backward_random_loss(dim)
    assert torch.count_nonzero(dim.prototypes.grad) > 0
    for name, parameter in dim.named_parameters():
        assert parameter.grad is not None, f"{name} got no gradient"
        # LayerNorm of an all-zero query row is its bias (zero), so the weights acting on it see a zero input and get
        # an exactly-zero gradient until the prototypes leave zero; every other parameter gets a nonzero one.
        if name not in ("level_blocks.0.attention.query_norm.weight", "level_blocks.0.attention.query.weight"):
            assert torch.count_nonzero(parameter.grad) > 0, f"{name} got an all-zero gradient"


def test_unused_layers_are_not_built():
    last = make_dim(levels="last")
    assert last.level_blocks[0].aggregation is None and last.level_blocks[0].proximity is None
    assert last.level_blocks[1].reprojection is None
    assert not hasattr(last.level_blocks[1].attention, "mlp")  # the last level's update would be discarded
    every = make_dim(levels="all")
    assert every.level_blocks[0].aggregation is not None
    assert count(every) > count(last)


def _class_zero_changes(dim: DynamicInteractionModule) -> tuple[float, float]:
    """Eval mode, only prototypes[1] perturbed: max change of class 0's relation map, and of class 1's map before
    the final ReLU (which at random init may be zero for a whole class, hiding any change)."""
    dim.eval()
    features = make_features()
    pre_relu = []
    dim.upsample.register_forward_hook(lambda module, inputs, output: pre_relu.append(output))
    with torch.no_grad():
        before = dim(features)
        dim.prototypes[1] += torch.randn_like(dim.prototypes[1])
        after = dim(features)
    return (after[:, 0] - before[:, 0]).abs().max().item(), (pre_relu[1][:, 1] - pre_relu[0][:, 1]).abs().max().item()


@pytest.mark.parametrize(
    "options",
    [{"aggregation": a} for a in AGGREGATIONS]
    + [{"levels": "all"}, {"prototype_residual": True}, {"num_classes": 3}],
)
def test_class_purity_in_default_layout(options):
    dim = make_dim(prototype_init="normal", **options)
    change_other, change_own = _class_zero_changes(dim)
    assert change_other <= 1e-6
    assert change_own > 1e-4


def test_legacy_layout_mixes_classes():
    dim = make_dim(prototype_init="normal", legacy_query_layout=True, aggregation="sum")
    change_other, _ = _class_zero_changes(dim)
    assert change_other > 1e-4


def test_full_upsampling_conv_mixes_classes():
    dim = make_dim(prototype_init="normal", upsample_mixes_classes=True, aggregation="sum")
    change_other, _ = _class_zero_changes(dim)
    assert change_other > 1e-4


def test_upsample_init_default_is_pytorchs_and_kaiming_is_a_switch():
    # 8 classes, full C -> C transposed conv: 512 weights, fan_in = 8 · 2³ = 64 (PyTorch's fan-in of a transposed
    # conv: weight.shape[1] times the kernel volume)
    options = dict(num_classes=8, num_prototypes=16, upsample_mixes_classes=True)
    fan_in = 64
    bound = 1.0 / fan_in**0.5  # PyTorch's default init: U(±1/√fan_in)
    authors = make_dim(**options)
    weight = authors.upsample.weight
    assert weight.shape == (8, 8, 2, 2, 2)
    assert weight.abs().max().item() <= bound
    assert weight.std().item() == pytest.approx(bound / 3**0.5, rel=0.15)
    ours = make_dim(upsample_init="kaiming", **options)
    assert ours.upsample.weight.std().item() == pytest.approx((2.0 / fan_in) ** 0.5, rel=0.15)
    assert ours.upsample.weight.abs().max().item() > bound
    for dim in (authors, ours):  # the DIM's Conv3d layers are Kaiming-normal either way
        conv = max((m for m in dim.modules() if isinstance(m, torch.nn.Conv3d)), key=lambda m: m.weight.numel())
        assert conv.weight.std().item() == pytest.approx((2.0 / conv.weight[0].numel()) ** 0.5, rel=0.1)
    with pytest.raises(ValueError, match=r"upsample_init must be one of \('authors', 'default', 'kaiming'\), got 'u"):
        make_dim(upsample_init="uniform")


@pytest.mark.parametrize("num_classes", [2, 8])
def test_grouped_upsampling_starts_at_the_authors_scale(num_classes):
    """The default grouped (per-class) transposed conv is drawn at the scale of the authors' full C -> C conv:
    U(±1/√(C·8)), ±0.25 for two classes; PyTorch's own init of the grouped conv (fan-in 8 alone, U(±0.354)) is the
    ``upsample_init="default"`` switch."""
    authors_bound = 1.0 / math.sqrt(num_classes * 8)
    torch.manual_seed(0)
    draws = [make_dim(num_classes=num_classes, seed=s).upsample for s in range(20)]
    weights = torch.cat([up.weight.reshape(-1) for up in draws])
    biases = torch.cat([up.bias.reshape(-1) for up in draws])
    assert draws[0].weight.shape == (num_classes, 1, 2, 2, 2)  # grouped: fan-in 8 under PyTorch's rule
    assert weights.abs().max().item() <= authors_bound
    assert weights.abs().max().item() > 0.9 * authors_bound  # the whole interval is used
    assert biases.abs().max().item() <= authors_bound
    assert weights.std().item() == pytest.approx(authors_bound / math.sqrt(3), rel=0.1)
    pytorch = torch.cat([make_dim(num_classes=num_classes, upsample_init="default", seed=s).upsample.weight.reshape(-1)
                         for s in range(20)])
    assert pytorch.abs().max().item() > 1.2 * authors_bound and pytorch.abs().max().item() <= 1 / math.sqrt(8)
    # with the authors' full conv both agree: "authors" is then PyTorch's default
    full = make_dim(num_classes=num_classes, upsample_mixes_classes=True).upsample.weight
    assert full.abs().max().item() <= authors_bound


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_two_dimensional_dim_shapes_layers_and_gradient(aggregation):
    """A patch of two sides gives a 2-D DIM: 2-D taps in, a (B, C, H, W) relation map out, 2-D layers only, and
    the gradient reaches the prototypes."""
    dim = make_dim(patch_size=(32, 24), num_classes=3, aggregation=aggregation, levels="all")
    assert dim.spatial_dims == 2 and dim.level_sizes == ((8, 6), (16, 12))
    assert not any(isinstance(m, (torch.nn.Conv3d, torch.nn.BatchNorm3d, torch.nn.ConvTranspose3d)) for m in dim.modules())
    assert isinstance(dim.upsample, torch.nn.ConvTranspose2d)
    features = [torch.randn(2, 64, 8, 6, requires_grad=True), torch.randn(2, 32, 16, 12, requires_grad=True)]
    relation = dim(features)
    assert relation.shape == (2, 3, 32, 24) and bool((relation >= 0).all())
    relation.square().sum().backward()
    assert dim.prototypes.grad is not None and dim.prototypes.grad.abs().sum() > 0
    assert all(f.grad.abs().sum() > 0 for f in features)
    with pytest.raises(ValueError, match=r"features\[1\] has spatial size \(16, 16\)"):
        dim([torch.randn(2, 64, 8, 6), torch.randn(2, 32, 16, 16)])


def test_two_dimensional_dim_keeps_classes_apart():
    dim = make_dim(patch_size=(16, 16), prototype_init="normal").eval()
    features = [torch.randn(1, 64, 4, 4), torch.randn(1, 32, 8, 8)]
    base = dim(features)
    with torch.no_grad():
        dim.prototypes[0].add_(1.0)
    changed = dim(features)
    assert (changed[:, 1] - base[:, 1]).abs().max() == 0  # class 1's map ignores class 0's prototypes
    assert (changed[:, 0] - base[:, 0]).abs().max() > 0


def test_legacy_query_layout_rows():
    num_classes, num_prototypes = 3, 4
    dim = make_dim(num_classes=num_classes, num_prototypes=num_prototypes, prototype_init="normal")
    flat = dim.prototypes.reshape(num_classes * num_prototypes, -1)
    assert torch.equal(dim.initial_queries()[0], dim.prototypes)
    dim.legacy_query_layout = True
    legacy = dim.initial_queries()[0]
    for c in range(num_classes):
        for k in range(num_prototypes):
            assert torch.equal(legacy[c, k], flat[k * num_classes + c])


def test_prototype_residual_switch_changes_output():
    # "sum" aggregation: at random init its eval-mode map is not zeroed by the final ReLU
    plain = make_dim(prototype_init="normal", aggregation="sum").eval()
    residual = make_dim(prototype_init="normal", aggregation="sum", prototype_residual=True).eval()
    residual.load_state_dict(plain.state_dict())
    features = make_features()
    with torch.no_grad():
        assert not torch.allclose(plain(features), residual(features))


def test_eval_mode_is_deterministic_and_train_mode_drops_paths():
    dim = make_dim(prototype_init="normal", drop_path=0.5, seed=1)  # seed 0: the final ReLU zeroes the whole map
    features = make_features()
    dim.eval()
    with torch.no_grad():
        assert torch.equal(dim(features), dim(features))
        dim.train()
        torch.manual_seed(3)
        first = dim(features)
        torch.manual_seed(4)
        second = dim(features)
    assert not torch.allclose(first, second)


def test_aggregation_parameter_counts_by_hand():
    c, k = 2, 4
    spatial = c * k * 27 + 2 * c * k + c * k * k + 2 * c * k  # grouped depthwise, BN, per-class pointwise, BN
    expected = {
        "sum": 0,
        "spatial": spatial,
        "conv": spatial + c * k + c,  # + per-class K->1 conv with bias
        "cross_class": k * 27 + 2 * k + k * k + 2 * k + k + 1,  # one shared SepConv + K->1 conv
    }
    for mode, number in expected.items():
        assert count(ClassCueAggregation(c, k, mode)) == number, mode
    totals = {mode: count(make_dim(aggregation=mode, num_classes=c, num_prototypes=k)) for mode in AGGREGATIONS}
    assert totals["sum"] < totals["cross_class"] < totals["spatial"] < totals["conv"]
    assert totals["conv"] - totals["sum"] == expected["conv"]


def test_sum_aggregation_is_plain_sum():
    maps = torch.randn(2, 3, 4, 5, 6, 7)
    assert torch.allclose(ClassCueAggregation(3, 4, "sum")(maps), maps.sum(dim=2))


def test_cross_class_shares_weights_and_conv_does_not():
    torch.manual_seed(0)
    maps = torch.randn(2, 3, 4, 6, 6, 6)
    permutation = torch.tensor([2, 0, 1])
    shared = ClassCueAggregation(3, 4, "cross_class").eval()
    with torch.no_grad():
        assert torch.allclose(shared(maps[:, permutation]), shared(maps)[:, permutation], atol=1e-6)
    separate = ClassCueAggregation(3, 4, "conv").eval()
    with torch.no_grad():
        for parameter in separate.parameters():
            parameter.copy_(torch.randn_like(parameter).abs() + 0.1)  # make the per-class weights differ
        assert not torch.allclose(separate(maps[:, permutation]), separate(maps)[:, permutation], atol=1e-4)


def test_attention_similarities_are_pre_softmax_and_update_by_hand():
    torch.manual_seed(0)
    width, num_tokens = 8, 10
    queries = torch.randn(1, 2, 3, width)
    tokens = torch.randn(2, num_tokens, width)
    for residual in (False, True):
        attention = PrototypeCrossAttention(width, prototype_residual=residual, drop_path=0.3).eval()
        with torch.no_grad():
            similarities, updated = attention(queries, tokens)
            q = attention.query(attention.query_norm(queries))  # (1, 2, 3, F)
            normed = attention.token_norm(tokens)
            k = attention.key(normed)  # (2, N, F)
            expected = torch.einsum("ckf,bnf->bckn", q[0], k) / math.sqrt(width)
            assert torch.allclose(similarities, expected, atol=1e-5)
            attended = attention.output(torch.einsum("bckn,bnf->bckf", expected.softmax(-1), attention.value(normed)))
            base = (queries if residual else attended) + attended
            assert torch.allclose(updated, base + attention.mlp(attention.mlp_norm(base)), atol=1e-5)
    similarities_only = PrototypeCrossAttention(width, update_prototypes=False)
    assert similarities_only(queries, tokens)[1] is None


def test_spatial_proximity_in_eval_by_hand():
    torch.manual_seed(0)
    proximity = SpatialProximity(12, drop_path=0.2).eval()
    with torch.no_grad():
        proximity.norm.weight.copy_(torch.randn(12))
        similarities = torch.randn(2, 2, 3, 12)
        doubled = 2 * similarities  # S + DP(S) with DP the identity at eval
        expected = doubled + torch.nn.functional.layer_norm(doubled, (12,), proximity.norm.weight, proximity.norm.bias)
        assert torch.allclose(proximity(similarities), expected, atol=1e-6)


def test_wrong_feature_size_names_patch_size():
    dim = make_dim()
    with pytest.raises(ValueError, match=r"\(8, 8, 8\).*patch_size \(32, 32, 16\).*needs \(8, 8, 4\).*training patch size"):
        dim(make_features(patch=(32, 32, 32)))


def test_wrong_features_raise():
    dim = make_dim()
    features = make_features()
    with pytest.raises(ValueError, match="2 decoder taps"):
        dim(features[:1])
    with pytest.raises(ValueError, match=r"features\[1\] must have shape"):
        dim([features[0], torch.randn(BATCH, 16, 16, 16, 8)])
    with pytest.raises(ValueError, match=r"features\[1\] must have shape"):
        dim([features[0], features[1][:1]])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"aggregation": "mean"}, "aggregation must be one of"),
        ({"levels": "first"}, "levels must be one of"),
        ({"prototype_init": "uniform"}, "prototype_init must be one of"),
        ({"patch_size": (30, 32, 16)}, r"divisible by \(4, 4, 4\) per axis"),
        ({"patch_size": (32, 32, 5), "strides": [[2, 2, 1], [2, 2, 2]]}, r"divisible by \(4, 4, 2\).*\(32, 32, 5\)"),
        ({"strides": [2, 2, 2]}, r"strides must be None or 2 entries"),
        ({"strides": [2, 3]}, r"strides\[1\] must be 1, 2"),
        ({"patch_size": (32, 32, 16, 8)}, r"patch_size must be 3 \(or 2, for slices\)"),
        ({"patch_size": (30, 32)}, r"divisible by \(4, 4\) per axis"),
        ({"num_classes": 1}, "num_classes"),
        ({"num_prototypes": 0}, "num_prototypes"),
        ({"drop_path": 1.5}, "drop_path"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_dim(**kwargs)


def test_la_patch_shapes():
    dim = DynamicInteractionModule(num_prototypes=2, drop_path=0.0).eval()
    assert dim.level_sizes == ((28, 28, 20), (56, 56, 40))
    assert dim.level_blocks[1].proximity.norm.normalized_shape == (56 * 56 * 40,)
    features = [torch.randn(1, 64, 28, 28, 20), torch.randn(1, 32, 56, 56, 40)]
    with torch.no_grad():
        assert dim(features).shape == (1, 2, 112, 112, 80)


@pytest.mark.parametrize("levels", ["last", "all"])
def test_anisotropic_strides_set_level_sizes_and_upsampling(levels):
    # backbone strides [[2, 2, 1], [2, 2, 1], ...] on a 32×32×8 patch: taps at 8×8×8 and 16×16×8
    patch, strides = (32, 32, 8), [[2, 2, 1], [2, 2, 1]]
    dim = make_dim(patch_size=patch, strides=strides, feature_channels=(32, 16), levels=levels)
    assert dim.strides == ((2, 2, 1), (2, 2, 1))
    assert dim.level_sizes == ((8, 8, 8), (16, 16, 8))
    assert dim.level_blocks[1].proximity.norm.normalized_shape == (16 * 16 * 8,)
    assert dim.upsample.kernel_size == dim.upsample.stride == (2, 2, 1)
    assert dim.prototypes.shape == (2, 4, 32)
    features = [torch.randn(BATCH, 32, 8, 8, 8), torch.randn(BATCH, 16, 16, 16, 8)]
    relation_map = dim(features)
    assert relation_map.shape == (BATCH, 2, *patch)
    relation_map.sum().backward()
    assert dim.prototypes.grad is not None and dim.prototypes.grad.abs().sum() > 0


def test_default_strides_spelled_out_give_the_same_module():
    default = make_dim(prototype_init="normal").eval()  # make_dim seeds the same for both
    spelled = make_dim(prototype_init="normal", strides=[2, [2, 2, 2]]).eval()
    assert spelled.level_sizes == default.level_sizes and spelled.upsample.kernel_size == (2, 2, 2)
    features = make_features()
    with torch.no_grad():
        assert torch.equal(spelled(features), default(features))
