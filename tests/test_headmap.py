"""Where a head looks (ccs_ray.headmap): per-token contributions that sum to the head's contribution, the maps
along a direction, and ``ccs-ray head MODEL HEAD --image`` writing them as a PNG heatmap over the image."""

import io
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from ccs_ray import head_map, load_model, tables
from ccs_ray.cli import main
from ccs_ray.decompose import decomposed_forward
from ccs_ray.headmap import span_maps, token_contributions
from ccs_ray.heatmap import ALPHA, CELL_LEVELS, PNG_KEY, VEIL, cells_png, colors
from ccs_ray.texts import text_embeddings

#: Relative error of the per-token terms' sum against the head's contribution, and of the terms against a direct
#: loop over the tokens, in float64 (both are sums of the same few hundred products).
FP64_TOLERANCE = 1e-10
#: Relative error of float32 maps computed two ways (different summation orders).
FP32_TOLERANCE = 1e-5
#: Largest difference of a drawn pixel from the blend of the image and the map's colour (PIL rounds the blend).
PIXEL_TOLERANCE = 1
TINY = "ccs-tiny/none"


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def _images(model, batch, seed, dtype=torch.float64):
    size = model.visual.image_size[0]
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.fixture(scope="module")
def tiny64():
    return load_model(TINY, device="cpu")[0].double()


def _loop(model, images, layer, h, convention):
    """c [B, T, D] token by token from the formulas of the headmap docstring, on the block input and the final
    residual that forward hooks capture in open_clip's own encode_image."""
    vis = model.visual
    blocks = vis.transformer.resblocks
    block = blocks[layer]
    seen = {}
    hooks = [block.register_forward_pre_hook(lambda m, args: seen.__setitem__("x", args[0])),
             vis.ln_post.register_forward_pre_hook(lambda m, args: seen.__setitem__("final", args[0]))]
    with torch.no_grad():
        e = model.encode_image(images)
        for hook in hooks:
            hook.remove()
        assert isinstance(block.ls_1, torch.nn.Identity)
        x, final = seen["x"], seen["final"]
        B, T, W = x.shape
        H, L = block.attn.num_heads, len(blocks)
        d, K = W // H, 2 * L + 1
        rows = slice(h * d, (h + 1) * d)
        w_q, w_k, w_v = (w[rows] for w in block.attn.in_proj_weight.split(W))
        b_q, b_k, b_v = (b[rows] for b in block.attn.in_proj_bias.split(W))
        w_o, b_o = block.attn.out_proj.weight[:, rows], block.attn.out_proj.bias
        gamma, beta, proj = vis.ln_post.weight, vis.ln_post.bias, vis.proj
        u = block.ln_1(x)
        out = torch.zeros(B, T, proj.shape[1], dtype=torch.float64)
        for b in range(B):
            q = w_q @ u[b, 0] + b_q
            logits = torch.stack([q @ (w_k @ u[b, j] + b_k) / math.sqrt(d) for j in range(T)])
            a = torch.exp(logits - logits.max())
            a = a / a.sum()
            xc = final[b, 0]
            mu = xc.mean()
            sigma = torch.sqrt(((xc - mu) ** 2).mean() + vis.ln_post.eps)
            for j in range(T):
                r = a[j] * (w_o @ (w_v @ u[b, j] + b_v))
                if convention == "centered":
                    out[b, j] = ((r - r.mean()) * gamma / sigma) @ proj
                else:
                    shifted = r + a[j] * (b_o / H - mu / (K * H))
                    out[b, j] = (shifted * gamma / sigma + a[j] * beta / (K * H)) @ proj / e[b].norm()
    return out


@pytest.mark.parametrize("convention", ["centered", "textspan"])
@pytest.mark.parametrize("key,heads,batch", [(TINY, ["L3.H1", "L1.H2", "L0.H0"], 3), ("ViT-B-32/none", ["L11.H5"], 1)])
def test_tokens_sum_to_the_heads_contribution_fp64(request, key, heads, batch, convention):
    if key == TINY:
        model = request.getfixturevalue("tiny64")
    else:
        model = _vit_b32()
    images = _images(model, batch, seed=7)
    for head in heads:
        layer, h = (int(p[1:]) for p in head.split("."))
        c = token_contributions(model, head, images, convention)
        assert c.shape == (batch, model.visual.grid_size[0] * model.visual.grid_size[1] + 1, model.visual.proj.shape[1])
        assert c.dtype == torch.float64
        reference = decomposed_forward(model, images, layers=[layer], convention=convention).contributions[:, 0, h]
        assert _rel(c.sum(1), reference) < FP64_TOLERANCE, head


_VIT_B32 = {}


def _vit_b32():
    if not _VIT_B32:
        _VIT_B32["model"] = load_model("ViT-B-32/none", device="cpu")[0].double()
    return _VIT_B32["model"]


@pytest.fixture(autouse=True, scope="module")
def _release_vit_b32():
    yield
    _VIT_B32.clear()


@pytest.mark.parametrize("convention", ["centered", "textspan"])
def test_tokens_equal_a_direct_loop_over_the_tokens(tiny64, convention):
    images = _images(tiny64, 2, seed=3)
    expected = _loop(tiny64, images, 2, 3, convention)
    assert _rel(token_contributions(tiny64, "L2.H3", images, convention), expected) < FP64_TOLERANCE


def test_head_map_projects_the_patches(tiny_model):
    model, preprocess = tiny_model
    images = _images(model, 2, seed=5, dtype=torch.float32)
    directions = torch.nn.functional.normalize(torch.randn(3, 32, generator=torch.Generator().manual_seed(1)), dim=-1)
    c = token_contributions(model, "L3.H2", images, "textspan")
    maps = head_map(model, "L3.H2", images, directions, "textspan")
    assert maps.shape == (2, 3, 4, 4)
    for i, d in enumerate(directions):
        expected = torch.tensor([[[(c[b, 1 + 4 * y + x] @ d).item() for x in range(4)] for y in range(4)]
                                 for b in range(2)])  # patches in row-major order after the class token
        assert _rel(maps[:, i], expected) < FP32_TOLERANCE
        one = head_map(model, "L3.H2", images, d, "textspan")
        assert one.shape == (2, 4, 4) and _rel(one, maps[:, i]) < FP32_TOLERANCE
        # the map and the class token's term make up the head's contribution along d
        total = decomposed_forward(model, images, layers=[3], convention="textspan").contributions[:, 0, 2] @ d
        assert _rel(one.sum((1, 2)) + c[:, 0] @ d, total) < FP32_TOLERANCE
    text = "a photo of a dog"
    by_text = head_map(model, "L3.H2", images, text)
    assert _rel(by_text, head_map(model, "L3.H2", images, text_embeddings(model, [text])[0])) < FP32_TOLERANCE
    picture = _picture(48, 40)
    from_pil = head_map(model, "L1.H0", [picture, picture], text)
    expected = head_map(model, "L1.H0", torch.stack([preprocess(picture)] * 2), text)  # open_clip's own transform
    assert _rel(from_pil, expected) < FP32_TOLERANCE
    with pytest.raises(ValueError, match="no head L4.H0"):
        head_map(model, "L4.H0", images, text)
    with pytest.raises(ValueError, match="not \\[32\\]"):
        head_map(model, "L3.H0", images, torch.ones(31))


def _picture(width, height, seed=0):
    """A generated RGB image: smooth colour gradients with noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    pixels = np.stack([255 * xx / width, 255 * yy / height, 128 + 0 * xx], -1) + rng.normal(0, 20, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _drawn(path):
    with Image.open(path) as png:
        return png.convert("RGB"), json.loads(png.text[PNG_KEY])


def _check_drawing(drawn, picture, values, scale):
    """The 56 x 40 picture as drawn: the model sees its central 40 x 40 square (resized to 32 x 32: 4 x 4 patches
    of 10 x 10 pixels), each patch in the colour of its value; the strips left and right are veiled."""
    assert drawn.size == picture.size == (56, 40)
    cells = colors(values, scale)
    for y, x, color in [(10 * i + 5, 8 + 10 * j + 5, cells[i, j]) for i in range(4) for j in range(4)] + [
            (20, 3, VEIL), (20, 52, VEIL)]:
        expected = (1 - ALPHA) * np.array(picture.getpixel((x, y))) + ALPHA * np.array(color)
        assert np.abs(np.array(drawn.getpixel((x, y))) - expected).max() <= PIXEL_TOLERANCE + 0.5, (x, y)


def test_cli_draws_a_text_direction_over_the_image(tiny_model, tmp_path, capsys):
    model = tiny_model[0]
    picture = _picture(56, 40)
    image, out = tmp_path / "photo.png", tmp_path / "map.png"
    picture.save(image)
    assert main(["head", TINY, "L3.H1", "--image", str(image), "--text", "a red square", "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    drawn, about = _drawn(out)
    expected = head_map(model, "L3.H1", str(image), "a red square")[0]
    values = np.array(about["values"])
    assert _rel(torch.as_tensor(values), expected.double()) < FP32_TOLERANCE
    assert about["scale"] == np.abs(values).max()
    assert {k: about[k] for k in ("model", "head", "text", "convention")} == dict(
        model=TINY, head="L3.H1", text="a red square", convention="centered")
    _check_drawing(drawn, picture, values, about["scale"])


def test_cli_draws_a_span_of_the_results(tiny_model, tmp_path, capsys, monkeypatch):
    model = tiny_model[0]
    root = str(tmp_path / "results")
    directions = torch.nn.functional.normalize(torch.randn(3, 32, generator=torch.Generator().manual_seed(2)), dim=-1)
    rows = [dict(layer=3, head=1, head_label="L3.H1", subset="all", rank=r, text=f"span {r}", convention="textspan",
                 method="data", direction=directions[r - 1].tolist()) for r in (1, 2)]
    rows.append(dict(rows[1], method="weights", direction=directions[2].tolist()))  # explain's spans are the data's
    tables.write_table(root, "spans", rows, "run-1", TINY)
    picture = _picture(56, 40, seed=1)
    picture.save(tmp_path / "photo.jpg", quality=95)
    monkeypatch.chdir(tmp_path)
    assert main(["head", TINY, "L3.H1", "--image", "photo.jpg", "--results", root, "--span", "2"]) == 0
    out = tmp_path / "photo-L3.H1.png"
    assert capsys.readouterr().out.strip() == str(out)
    drawn, about = _drawn(out)
    assert (about["run_id"], about["span_rank"], about["text"], about["convention"]) == ("run-1", 2, "span 2",
                                                                                          "textspan")
    with Image.open(tmp_path / "photo.jpg") as seen:
        expected = head_map(model, "L3.H1", seen, directions[1], "textspan")[0]
        _check_drawing(drawn, seen.convert("RGB"), np.array(about["values"]), about["scale"])
    assert _rel(torch.tensor(about["values"]), expected.double()) < FP32_TOLERANCE


@pytest.mark.parametrize("args, message", [
    ([], "the head's card is read from the results: give --results ROOT (or --image PATH to draw where the head "
         "looks)"),
    (["--image", "photo.png"], "the head's span directions are read from --results ROOT (or give --text)"),
    (["--text", "a dog"], "--text, --span and --convention draw a head's map: they need --image PATH"),
    (["--image", "photo.png", "--results", "{root}", "--span", "3"],
     "L3.H1 of ccs-tiny/none in run run-1 has no span 3 with a direction; spans: 1"),
    (["--image", "photo.png", "--results", "{root}", "--convention", "centered"],
     "the spans of L3.H1 of ccs-tiny/none are in convention 'textspan', not 'centered'"),
    (["--image", "photo.png", "--results", "{root}/elsewhere"],
     "no spans of L3.H1 of ccs-tiny/none under {root}/elsewhere: give --text, or run the spans stage"),
])
def test_cli_says_what_a_map_needs(tmp_path, capsys, args, message):
    root = str(tmp_path / "results")
    tables.write_table(root, "spans", [dict(layer=3, head=1, head_label="L3.H1", subset="all", rank=1, text="span",
                                            convention="textspan", method="data", direction=[0.0] * 32)],
                       "run-1", TINY)
    assert main(["head", TINY, "L3.H1", *(a.format(root=root) for a in args)]) == 2
    assert capsys.readouterr().err == f"ccs-ray: {message.format(root=root)}\n"


def test_cli_refuses_a_file_that_is_no_image_in_one_line(tmp_path, capsys):
    notes = tmp_path / "notes.png"
    notes.write_text("not an image")
    assert main(["head", TINY, "L3.H1", "--image", str(notes), "--text", "a dog"]) == 2
    assert capsys.readouterr().err == (f"ccs-ray: {notes}: not_an_image: 12 bytes in no image format PIL reads "
                                       f"(starts b'not an i')\n")


def test_span_maps_of_several_heads_equal_each_heads_map(tiny_model):
    """One pass for heads of different layers, each along its own directions, as head_map computes each alone."""
    model = tiny_model[0]
    images = _images(model, 3, seed=7, dtype=torch.float32)
    g = torch.Generator().manual_seed(4)
    directions = {"L1.H3": torch.randn(2, 32, generator=g), "L3.H0": torch.randn(1, 32, generator=g),
                  "L3.H2": torch.randn(3, 32, generator=g)}
    maps = span_maps(model, images, directions, "textspan")
    assert {h: tuple(m.shape) for h, m in maps.items()} == {"L1.H3": (3, 2, 4, 4), "L3.H0": (3, 1, 4, 4),
                                                           "L3.H2": (3, 3, 4, 4)}
    for head, d in directions.items():
        assert _rel(maps[head], head_map(model, head, images, d, "textspan")) < FP32_TOLERANCE


def test_cells_png_is_one_pixel_per_patch_on_the_scale():
    values = np.array([[-2.0, 0.0, 1.0], [0.5, -1.0, 2.0]])  # each on one of the CELL_LEVELS steps of scale 2
    with Image.open(io.BytesIO(cells_png(values))) as png:
        assert png.format == "PNG" and png.size == (3, 2)
        assert (np.asarray(png.convert("RGB")) == colors(values, 2.0)).all()
    between = np.random.default_rng(0).uniform(-3, 3, (16, 16))  # drawn at the nearest step, clipped at +-scale
    step = 2 * 2.0 / (CELL_LEVELS - 1)
    with Image.open(io.BytesIO(png_bytes := cells_png(between, 2.0))) as png:
        nearest = np.clip(np.rint(between / step) * step, -2.0, 2.0)
        assert (np.asarray(png.convert("RGB")) == colors(nearest, 2.0)).all()
    assert len(png_bytes) < 500  # a palette image: a report holds thousands of them
