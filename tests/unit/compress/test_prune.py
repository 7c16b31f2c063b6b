import pytest
import torch

from maas.compress.methods import compress
from maas.compress.prune import keep_n_of_m, keep_smallest_out, prunable, prune_layers
from maas.engine.llm.loader import load_lm
from maas.errors import InvalidRequestError


def test_two_of_every_four_are_kept_the_highest():
    score = torch.tensor([[1.0, 4.0, 3.0, 2.0, 0.1, 0.2, 0.4, 0.3]])
    keep = keep_n_of_m(score)
    assert keep.tolist() == [[False, True, True, False, False, False, True, True]]
    big = keep_n_of_m(torch.rand(16, 64))
    assert (big.reshape(16, 16, 4).sum(-1) == 2).all()


def test_per_row_and_per_matrix_selection():
    score = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]])
    assert keep_smallest_out(score, 0.5, per_row=True).tolist() == [[False, False, True, True]] * 2
    assert keep_smallest_out(score, 0.5, per_row=False).tolist() == [[False] * 4, [True] * 4]


def test_wanda_weighs_weights_by_their_inputs():
    layer = torch.nn.Linear(4, 1, bias=False)
    layer.weight.data = torch.tensor([[1.0, 1.0, 2.0, 2.0]])
    norms = {"l": torch.tensor([10.0, 10.0, 1.0, 1.0])}  # small weights on loud inputs matter more
    shares = prune_layers({"l": layer}, "wanda", 0.5, norms)
    assert layer.weight.tolist() == [[1.0, 1.0, 0.0, 0.0]] and shares == {"l": 0.5}


@pytest.mark.parametrize(
    ("method", "calibrated"), [("magnitude", False), ("wanda", True), ("2:4", True), ("2:4", False)]
)
def test_pruned_version_has_the_zeros_and_the_lineage(tmp_path, tiny_registry, method, calibrated):
    reg, model = tiny_registry
    calib = tmp_path / "calib.txt"
    calib.write_text("the quick brown fox jumps over the lazy dog\n" * 40)
    sparsity = None if method == "2:4" else 0.5
    info = compress("prune", "tiny:base", method, sparsity=sparsity, calibration=calib if calibrated else None,
                    calibration_tokens=256 if calibrated else None)  # fmt: skip
    assert info.operation == "prune" and info.parent == "tiny:base"
    p = info.parameters or {}
    assert p["score"] == ("wanda" if calibrated else "magnitude")
    assert ("calibration_digest" in p) == calibrated
    lm = load_lm(reg.path_for(f"tiny:{info.tag}"), "cpu", "float32")
    layers = prunable(lm.model)
    assert len(layers) == 7 * model.config.num_hidden_layers
    for name, layer in layers.items():
        w = layer.weight
        assert float((w == 0).float().mean()) == pytest.approx(0.5, abs=0.01), name
        if method == "2:4":
            assert ((w.reshape(w.shape[0], -1, 4) != 0).sum(-1) <= 2).all()
    assert torch.equal(lm.model.lm_head.weight, model.lm_head.weight)  # the head is kept
    assert torch.equal(lm.model.model.embed_tokens.weight, model.model.embed_tokens.weight)


def test_bad_requests_are_refused_before_any_model_is_read(tmp_path):
    from maas.compress.methods import find, options

    def opts(method, **given):
        return options(find("prune", method, "llm"), given)

    with pytest.raises(InvalidRequestError, match="give --calibration"):
        opts("wanda", sparsity=0.5)
    with pytest.raises(InvalidRequestError, match=r"magnitude takes no --calibration \(wanda, 2:4"):
        opts("magnitude", calibration=tmp_path / "c.txt")
    with pytest.raises(InvalidRequestError, match="2:4 takes no --sparsity"):
        opts("2:4", sparsity=0.6)
    with pytest.raises(InvalidRequestError, match="strictly between"):
        opts("magnitude", sparsity=1.0)
    with pytest.raises(
        InvalidRequestError, match=r"unknown prune method 'random' \(choose from magnitude, wanda"
    ):
        find("prune", "random", "llm")
    with pytest.raises(InvalidRequestError, match="applies to llm and embedding models, not tensor"):
        find("prune", "wanda", "tensor")


@pytest.mark.parametrize(
    ("ffn", "heads", "calibrated"), [(0.5, 0.0, True), (0.0, 0.5, False), (0.25, 0.5, True)]
)
def test_structured_pruning_writes_smaller_matrices_that_load(
    tmp_path, tiny_registry, ffn, heads, calibrated
):
    reg, model = tiny_registry  # 4 heads, 2 KV heads: 2 query heads per group; FFN 128 wide
    calib = tmp_path / "calib.txt"
    calib.write_text("sphinx of black quartz judge my vow\n" * 30)
    info = compress("prune", "tiny:base", "structured", ffn=ffn, heads=heads,
                    calibration=calib if calibrated else None, calibration_tokens=256)  # fmt: skip
    lm = load_lm(reg.path_for(f"tiny:{info.tag}"), "cpu", "float32")
    layer = lm.model.model.layers[0]
    assert layer.mlp.down_proj.in_features == 128 - int(128 * ffn)
    assert layer.self_attn.q_proj.out_features == (2 if heads else 4) * 16
    p = info.parameters or {}
    assert p["parameters_after"] < p["parameters_before"] and info.size < reg.show("tiny:base").size
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        out = lm.model(ids)
    assert out.shape == (1, 5, 288) and torch.isfinite(out).all()


def test_structured_pruning_refuses_what_it_cannot_do(tmp_path):
    from maas.compress.methods import find, options

    structured = find("prune", "structured", "llm")
    with pytest.raises(InvalidRequestError, match="--ffn and/or --heads"):
        options(structured, {})
    with pytest.raises(InvalidRequestError, match="--ffn and/or --heads"):
        options(structured, {"ffn": 1.0})
    with pytest.raises(InvalidRequestError, match="structured takes no --channels"):
        options(structured, {"channels": 0.5})
