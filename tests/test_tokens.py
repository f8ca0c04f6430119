"""TokenLayout and the token maths every stage shares (property tests)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vitsae.tokens import (
    TokenLayout,
    find_row,
    patch_to_token,
    provenance_rows,
    select_tokens,
    token_to_patch,
)

layouts = st.builds(
    TokenLayout,
    st.integers(0, 2),
    st.integers(0, 4),
    st.tuples(st.integers(1, 12), st.integers(1, 12)),
    st.integers(1, 64),
)


@settings(deadline=None, max_examples=50)
@given(
    n_cls=st.integers(0, 2),
    n_registers=st.integers(0, 4),
    grid_h=st.integers(1, 9),
    grid_w=st.integers(1, 9),
    data=st.data(),
)
def test_patch_of_inverts_row_major_order(n_cls, n_registers, grid_h, grid_w, data):
    layout = TokenLayout(n_cls, n_registers, (grid_h, grid_w), 8)
    assert layout.n_tokens == n_cls + n_registers + grid_h * grid_w
    row, col = data.draw(st.integers(0, grid_h - 1)), data.draw(st.integers(0, grid_w - 1))
    assert layout.patch_of(layout.n_prefix + row * grid_w + col) == (row, col)
    if layout.n_prefix:
        assert layout.patch_of(data.draw(st.integers(0, layout.n_prefix - 1))) is None
    with pytest.raises(IndexError, match="out of range"):
        layout.patch_of(layout.n_tokens)


def test_summary_layout_has_no_patches():
    layout = TokenLayout(1, 0, None, 10)
    assert layout.n_tokens == 1 and layout.n_patches == 0 and layout.patch_of(0) is None
    rows, cols = token_to_patch(layout, [0])
    assert rows.tolist() == [-1] and cols.tolist() == [-1]
    with pytest.raises(IndexError, match="no patch grid"):
        patch_to_token(layout, 0, 0)


@given(layouts)
def test_dict_round_trip(layout: TokenLayout) -> None:
    entry = layout.to_dict()
    assert entry == {
        "n_cls": layout.n_cls,
        "n_registers": layout.n_registers,
        "grid_hw": list(layout.grid_hw),
    }
    assert TokenLayout.from_dict(entry, layout.width) == layout


def test_no_grid_is_none_in_memory_and_zero_by_zero_on_disk():
    layout = TokenLayout(1, 0, None, 7)
    assert layout.to_dict()["grid_hw"] == [0, 0]
    assert TokenLayout.from_dict(layout.to_dict(), 7) == layout
    assert TokenLayout.from_dict({"n_cls": 1, "n_registers": 0, "grid_hw": None}, 7) == layout


def test_importing_tokens_loads_no_torch():
    heavy = "{'torch', 'transformers', 'transformer_lens'}"
    code = f"import sys, vitsae.tokens; print(sorted({heavy} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@given(layouts, st.data())
def test_patch_token_round_trip(layout: TokenLayout, data: st.DataObject) -> None:
    row = data.draw(st.integers(0, layout.grid_hw[0] - 1))
    col = data.draw(st.integers(0, layout.grid_hw[1] - 1))
    token = patch_to_token(layout, row, col)
    assert layout.n_prefix <= token < layout.n_tokens
    assert tuple(int(v) for v in token_to_patch(layout, token)) == (row, col)


@given(layouts)
def test_every_token_maps_to_one_patch_or_none(layout: TokenLayout) -> None:
    rows, cols = token_to_patch(layout, np.arange(layout.n_tokens))
    prefix = layout.n_prefix
    assert np.all(rows[:prefix] == -1) and np.all(cols[:prefix] == -1)
    patches = set(zip(rows[prefix:].tolist(), cols[prefix:].tolist(), strict=True))
    assert patches == {(r, c) for r in range(layout.grid_hw[0]) for c in range(layout.grid_hw[1])}
    tokens = patch_to_token(layout, rows[prefix:], cols[prefix:])
    assert np.array_equal(tokens, np.arange(prefix, layout.n_tokens))


@given(layouts, st.booleans())
def test_selections(layout: TokenLayout, registers: bool) -> None:
    n_patches = layout.grid_hw[0] * layout.grid_hw[1]
    everything = select_tokens(layout, "all", include_registers=registers)
    assert np.all(np.diff(everything) > 0)
    assert len(everything) == layout.n_cls + n_patches + (layout.n_registers if registers else 0)
    patches = select_tokens(layout, "patches", include_registers=registers)
    assert np.array_equal(patches, np.arange(layout.n_prefix, layout.n_tokens))
    if layout.n_cls:
        assert np.array_equal(select_tokens(layout, "cls"), np.arange(layout.n_cls))
    else:
        with pytest.raises(ValueError, match="needs a class token"):
            select_tokens(layout, "cls")


def test_unknown_selection_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"'mean'.*\['all', 'cls', 'patches'\]"):
        select_tokens(TokenLayout(1, 0, (2, 2), 4), "mean")


def test_out_of_range_tokens_and_patches_are_errors() -> None:
    layout = TokenLayout(1, 0, (2, 3), 4)
    with pytest.raises(IndexError):
        token_to_patch(layout, [7])
    with pytest.raises(IndexError, match="2x3"):
        patch_to_token(layout, 2, 0)


@given(
    st.lists(st.integers(0, 200), unique=True, max_size=30),
    layouts,
    st.sampled_from(["all", "patches"]),
    st.data(),
)
def test_row_provenance_round_trip(
    images: list[int], layout: TokenLayout, selection: str, data: st.DataObject
) -> None:
    images_B = np.sort(np.asarray(images, dtype=np.int64))
    tokens_T = select_tokens(layout, selection)
    image_R, token_R = provenance_rows(images_B, tokens_T)
    assert len(image_R) == len(images_B) * len(tokens_T)
    last = len(image_R) - 1
    picked = data.draw(st.lists(st.integers(0, last), max_size=10)) if last >= 0 else []
    for row in picked:
        assert find_row(image_R, token_R, int(image_R[row]), int(token_R[row])) == row
        image, token = divmod(row, len(tokens_T))
        assert (image_R[row], token_R[row]) == (images_B[image], tokens_T[token])
    absent_image = data.draw(st.integers(0, 250).filter(lambda i: i not in images))
    assert find_row(image_R, token_R, absent_image, int(tokens_T[0])) is None
    if layout.n_cls and selection == "patches" and len(images_B):
        assert find_row(image_R, token_R, int(images_B[0]), 0) is None
