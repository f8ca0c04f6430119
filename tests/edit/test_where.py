"""Token selection maths against brute force over TokenLayout.patch_of (hypothesis)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vitsae.edit.where import SelectionError, box_patch_mask, kinds_name, parse_kinds, token_kind_mask
from vitsae.tokens import TokenLayout

layouts = st.builds(
    TokenLayout,
    n_cls=st.integers(0, 2),
    n_registers=st.integers(0, 4),
    grid_hw=st.tuples(st.integers(1, 6), st.integers(1, 6)),
    width=st.just(8),
)
kind_sets = st.sets(st.sampled_from(["cls", "registers", "patches"]), min_size=1)


@given(layouts, kind_sets)
def test_kind_mask_marks_exactly_the_tokens_of_those_kinds(layout, kinds):
    mask = token_kind_mask(layout, layout.n_tokens, frozenset(kinds))
    for token in range(layout.n_tokens):
        if layout.patch_of(token) is not None:
            kind = "patches"
        else:
            kind = "cls" if token < layout.n_cls else "registers"
        assert bool(mask[token]) == (kind in kinds)
    assert parse_kinds(kinds_name(frozenset(kinds))) == frozenset(kinds)


@given(layouts, st.integers(1, 4), st.data())
def test_box_selects_the_patches_whose_centre_is_inside(layout, patch, data):
    grid_h, grid_w = layout.grid_hw
    image_hw = (grid_h * patch, grid_w * patch)
    x0 = data.draw(st.floats(0, image_hw[1] - 0.5))
    x1 = data.draw(st.floats(x0 + 0.25, image_hw[1] + 1))
    y0 = data.draw(st.floats(0, image_hw[0] - 0.5))
    y1 = data.draw(st.floats(y0 + 0.25, image_hw[0] + 1))
    expected = [
        (r, c)
        for r in range(grid_h)
        for c in range(grid_w)
        if x0 <= (c + 0.5) * patch < x1 and y0 <= (r + 0.5) * patch < y1
    ]
    try:
        mask = box_patch_mask(layout, (x0, y0, x1, y1), image_hw)
    except SelectionError:
        assert expected == []
        return
    assert [tuple(rc) for rc in mask.nonzero().tolist()] == expected
