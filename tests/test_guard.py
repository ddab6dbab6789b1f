"""The guard of tests/conftest.py: a test that changes a session-scoped model fails, naming what it changed, and
the tests after it see the model as it was loaded."""

from pathlib import Path

import torch

from conftest import _changes, fingerprint


def test_fingerprint_names_each_change(tiny_model_copy):
    model = tiny_model_copy[0]
    before = fingerprint(model)
    submodules = tuple(model.visual._modules)
    with torch.no_grad():
        model.visual.proj.data[0, 0] += 1  # through .data: no version counter moves
    model.visual.transformer.resblocks[1].attn.out_proj.weight.requires_grad_(False)
    del model.attn_mask
    model.text_pool_type = "last"
    model.visual.extra = torch.nn.Identity()
    assert _changes(before, fingerprint(model)) == [
        "attribute text_pool_type: 'argmax' -> 'last'",
        "attribute visual.extra.training added",
        "buffer attn_mask removed",
        "parameter visual.proj: values changed",
        "parameter visual.transformer.resblocks.1.attn.out_proj.weight: requires_grad changed",
        "submodules of visual.extra added",
        f"submodules of visual: {submodules!r} -> {(*submodules, 'extra')!r}",
    ]


def test_a_test_that_changes_a_session_model_fails_and_the_next_finds_it_restored(pytester):
    pytester.makeconftest(Path(__file__).with_name("conftest.py").read_text())
    pytester.makepyfile(test_inner="""
        def test_changes_it(tiny_model):
            tiny_model[0].attn_mask = None

        def test_reads_it(tiny_model):
            assert tiny_model[0].attn_mask is not None
        """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-o", "addopts=")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_changes_it*",
                                 "*tiny_model: buffer attn_mask: * -> None*"])
